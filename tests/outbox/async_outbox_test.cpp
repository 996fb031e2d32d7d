// AsyncOutbox: appends queued together commit together.
#include "outbox/outbox.hpp"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <stdexcept>
#include <tuple>

#include "outbox_fixture.hpp"
#include "schema_sql.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"
#include "tail/line_splitter.hpp"

using namespace tailbox;
using outbox::Chunk;
using outbox::Outbox;
using outbox::RowKey;
using testing::Fixture;

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <thread>

#include "outbox/async_outbox.hpp"

TEST_SUITE("outbox.async") {
  TEST_CASE("concurrent appends are grouped into fewer transactions, each committed once") {
    testing::TempDir dir;
    auto ob = Outbox::open({dir / "o.db", config::Synchronous::off, false});
    std::atomic<int> commits{0};
    ob->set_fault_hook([&](std::string_view at) {
      if (at == "append-commit") ++commits;
    });
    std::vector<int64_t> ids;
    for (int i = 0; i < 40; ++i) {
      FileIdentity fi;
      fi.inode = static_cast<uint64_t>(i + 1);
      Status st;
      ids.push_back(ob->add_file("app", "/f" + std::to_string(i), fi, 0)->id);
    }
    boost::asio::io_context ioc;
    outbox::AsyncOutbox async(ioc.get_executor(), std::move(ob));
    std::atomic<int> notified{0};
    async.on_append([&] { ++notified; });
    std::string text = "a\nb\nc\n";
    std::vector<Chunk> chunks(40);
    std::atomic<int> ok{0};
    for (int i = 0; i < 40; ++i) {
      chunks[i].file_id = ids[i];
      chunks[i].next_offset = static_cast<int64_t>(tail::split_lines(text, 0, 100, false, chunks[i].lines));
      boost::asio::co_spawn(boost::asio::make_strand(ioc), async.append(chunks[i]),
                            [&](std::exception_ptr, Status st) { if (st.is_ok()) ++ok; });
    }
    std::thread t([&] { ioc.run(); });
    ioc.run();
    t.join();
    CHECK(ok == 40);
    CHECK(async.backlog().rows == 120);
    CHECK(commits < 40);
    CHECK(commits >= 1);
    CHECK(notified == commits);
    for (const auto& f : testing::ok(async.unsafe_sync().tracked_files())) CHECK(f.read_offset == 6);
  }
}
