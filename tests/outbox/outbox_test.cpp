// The outbox's write and delivery side: appends with their checkpoints,
// leases, acks (range deletes), failures and dead rows.
#include "outbox/outbox.hpp"

#include <doctest/doctest.h>
#include <sqlite3.h>
#include <sys/stat.h>

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

TEST_SUITE("outbox") {
  TEST_CASE("rows and the checkpoint commit together") {
    Fixture f;
    int64_t id = f.add("a.log");
    REQUIRE(f.append(f.chunk(id, "one\ntwo\nthree\n", 0)).is_ok());
    CHECK(f.offset_of(id) == 14);
    auto rows = f.lease_all();
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].payload == "one");
    CHECK(rows[1].offset == 4);
    CHECK(rows[2].info->uid.size() >= 16);
    CHECK(f.ob->backlog().rows == 3);
    CHECK(f.ob->backlog().bytes == 11);
  }

  TEST_CASE("a fault between the rows and the checkpoint commits neither") {
    Fixture f;
    int64_t id = f.add("a.log");
    REQUIRE(f.append(f.chunk(id, "one\n", 0)).is_ok());
    for (const char* stage : {"rows-inserted", "checkpoint-updated"}) {
      CAPTURE(stage);
      f.ob->set_fault_hook([stage](std::string_view at) {
        if (at == stage) throw std::runtime_error("injected fault");
      });
      Status st = f.append(f.chunk(id, "two\nthree\n", 4));
      CHECK_FALSE(st.is_ok());
      CHECK(st.message().find("injected") != std::string::npos);
      f.ob->set_fault_hook({});
      CHECK(f.offset_of(id) == 4);
      CHECK(f.lease_all().size() == 1);
      CHECK(f.ob->backlog().rows == 1);
    }
    // After the fault, the same chunk commits normally, once.
    REQUIRE(f.append(f.chunk(id, "two\nthree\n", 4)).is_ok());
    CHECK(f.offset_of(id) == 14);
    CHECK(f.lease_all().size() == 3);
  }

  TEST_CASE("a fault survives a reopen: nothing half-committed is on disk") {
    testing::TempDir dir;
    std::string path = dir / "o.db";
    int64_t id;
    {
      auto ob = Outbox::open({path, config::Synchronous::full, false});
      FileIdentity fi;
      fi.inode = 5;
      Status st;
      id = ob->add_file("app", "/x.log", fi, 0)->id;
      std::string text = "a\nb\n";
      Chunk c;
      c.file_id = id;
      tail::split_lines(text, 0, 100, false, c.lines);
      c.next_offset = 4;
      ob->set_fault_hook([](std::string_view at) {
        if (at == "checkpoint-updated") throw std::runtime_error("crash");
      });
      const Chunk* one[] = {&c};
      CHECK_FALSE(ob->append(one).is_ok());
    }
    auto ob = Outbox::open({path, config::Synchronous::full, false});
    CHECK(ob->backlog().rows == 0);
    CHECK(testing::ok(ob->tracked_files()).at(0).read_offset == 0);
  }

  TEST_CASE("the unique key refuses a second copy of a line") {
    Fixture f;
    int64_t id = f.add("a.log");
    REQUIRE(f.append(f.chunk(id, "one\ntwo\n", 0)).is_ok());
    REQUIRE(f.append(f.chunk(id, "one\ntwo\nthree\n", 0)).is_ok());
    auto rows = f.lease_all();
    CHECK(rows.size() == 3);
    CHECK(f.ob->backlog().rows == 3);
  }

  TEST_CASE("a chunk of many lines (inserted in blocks) keeps each line once, counted exactly") {
    Fixture f;
    int64_t id = f.add("a.log");
    // 100 lines "line 0".."line 99": three whole blocks of 32 rows and a tail of 4.
    std::string text;
    std::vector<int64_t> offsets;
    for (int i = 0; i < 100; ++i) {
      offsets.push_back(static_cast<int64_t>(text.size()));
      text += "line " + std::to_string(i) + "\n";
    }
    // Some lines are there already (read before a crash): lines 5..9 and 70.
    std::string some = text.substr(static_cast<size_t>(offsets[5]),
                                   static_cast<size_t>(offsets[10] - offsets[5]));
    REQUIRE(f.append(f.chunk(id, some, offsets[5])).is_ok());
    std::string l70 = "line 70\n";
    REQUIRE(f.append(f.chunk(id, l70, offsets[70])).is_ok());
    CHECK(f.ob->backlog().rows == 6);
    REQUIRE(f.append(f.chunk(id, text, 0)).is_ok());
    auto rows = f.lease_all();
    REQUIRE(rows.size() == 100);
    int64_t bytes = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      CHECK(rows[i].offset == offsets[i]);
      CHECK(rows[i].payload == "line " + std::to_string(i));
      bytes += static_cast<int64_t>(rows[i].payload.size());
    }
    CHECK(f.ob->backlog().rows == 100);
    CHECK(f.ob->backlog().bytes == bytes);
    // All of it again: nothing added, nothing counted.
    REQUIRE(f.append(f.chunk(id, text, 0)).is_ok());
    CHECK(f.ob->backlog().rows == 100);
    CHECK(f.ob->backlog().bytes == bytes);
    CHECK(f.offset_of(id) == static_cast<int64_t>(text.size()));
  }

  TEST_CASE("the WAL is copied back on the checkpoint thread, and stays bounded") {
    Fixture f;
    int64_t id = f.add("a.log");
    // ~40 MiB through the WAL (appends, then deletes): many times the 1000
    // pages that wake the checkpoint thread.
    std::string line(200, 'x');
    std::string text;
    for (int i = 0; i < 1000; ++i) text += line + "\n";
    int64_t base = 0;
    int64_t most_wal = 0;
    for (int round = 0; round < 100; ++round) {
      REQUIRE(f.append(f.chunk(id, text, base)).is_ok());
      base += static_cast<int64_t>(text.size());
      struct stat st {};
      if (::stat((f.path + "-wal").c_str(), &st) == 0) most_wal = std::max<int64_t>(most_wal, st.st_size);
      if (round % 10 == 9) {
        auto rows = f.lease_all();
        std::vector<RowKey> keys;
        for (const auto& r : rows) keys.push_back(r.key());
        REQUIRE(f.ob->ack(keys, 0, nullptr).is_ok());
      }
    }
    Outbox::Health h = f.ob->health();
    CHECK(h.checkpoints > 0);
    CHECK(h.checkpoints > h.writer_checkpoints);
    // Never more than the writer's own limit (4000 pages of 4 KiB) and a round.
    CHECK(most_wal < (4000 + 600) * 4120);
    CHECK(f.ob->backlog().rows == 0);
  }

  TEST_CASE("ack deletes rows and stores the sink state in the same transaction") {
    Fixture f;
    int64_t id = f.add("a.log");
    REQUIRE(f.append(f.chunk(id, "1\n2\n3\n", 0)).is_ok());
    auto rows = f.lease_all();
    std::vector<RowKey> ids{rows[0].key(), rows[1].key()};
    std::pair<std::string, std::string> state{"file:/out", "1:2:300"};
    REQUIRE(f.ob->ack(ids, 2, &state).is_ok());
    CHECK(f.lease_all().size() == 1);
    CHECK(testing::ok(f.ob->sink_state("file:/out")) == std::optional<std::string>("1:2:300"));
    CHECK(f.ob->backlog().rows == 1);

    // A failed ack changes nothing.
    f.ob->set_fault_hook([](std::string_view at) {
      if (at == "rows-deleted") throw std::runtime_error("io");
    });
    std::vector<RowKey> last{rows[2].key()};
    std::pair<std::string, std::string> state2{"file:/out", "1:2:400"};
    CHECK_FALSE(f.ob->ack(last, 1, &state2).is_ok());
    f.ob->set_fault_hook({});
    CHECK(f.lease_all().size() == 1);
    CHECK(testing::ok(f.ob->sink_state("file:/out")) == std::optional<std::string>("1:2:300"));
  }

  TEST_CASE("rows_exist: a line past its file's checkpoint is still to be delivered") {
    // After a power cut rolled back a row and the checkpoint together, the
    // line is read again under the same key: a sink that finds the key at the
    // destination must acknowledge it when it comes, not forget it.
    Fixture f;
    int64_t a = f.add("a.log");
    std::string uid;
    uint64_t inode = 0;
    for (const auto& t : testing::ok(f.ob->tracked_files()))
      if (t.id == a) uid = t.uid, inode = t.identity.inode;
    Chunk c = f.chunk(a, "one\ntwo\n", 0);   // offsets 0 and 4; checkpoint 8
    c.inode = inode;
    REQUIRE(f.append(c).is_ok());
    auto rows = f.lease_all();
    std::vector<RowKey> ids{rows[0].key(), rows[1].key()};
    REQUIRE(f.ob->ack(ids, 6, nullptr).is_ok());
    const std::string k = "edge1/" + uid + "/";
    Status st;
    // 0 and 4: read and delivered. 8, 12: not read yet.
    CHECK(testing::ok(f.ob->rows_exist({k + "0", k + "4", k + "8", k + "12"})) ==
          std::vector<bool>{false, false, true, true});
    REQUIRE(f.ob->release_file(a).is_ok());   // a released file is never read again
    CHECK(testing::ok(f.ob->rows_exist({k + "8"})) == std::vector<bool>{false});
  }

  TEST_CASE("rows_exist says which keys still have a row, pending or dead") {
    Fixture f;
    int64_t a = f.add("a.log"), b = f.add("b.log");
    uint64_t inode_a = 0;
    std::string uid_a, uid_b;
    for (const auto& t : testing::ok(f.ob->tracked_files())) {
      if (t.id == a) inode_a = t.identity.inode, uid_a = t.uid;
      if (t.id == b) uid_b = t.uid;
    }
    Chunk ca = f.chunk(a, "one\ntwo\nthree\n", 0);   // offsets 0, 4, 8
    ca.inode = inode_a;                               // as the tailer writes it
    REQUIRE(f.append(ca).is_ok());
    Chunk cb = f.chunk(b, "other\n", 0);             // another inode than b's: not b's row
    REQUIRE(f.append(cb).is_ok());
    auto rows = f.lease_all();
    REQUIRE(rows.size() == 4);

    std::string k = "edge1/" + uid_a + "/";
    std::vector<std::string> keys{k + "0", k + "4", k + "8", k + "5", "edge1/" + uid_b + "/0",
                                  "edge1/nouid/0", "garbage", k, k + "x", "/" + uid_a + "/0",
                                  k + "-4"};
    Status st;
    auto found = testing::ok(f.ob->rows_exist(keys));
    REQUIRE(st.is_ok());
    // k + "5": inside a line that was read (no key starts there).
    CHECK(found == std::vector<bool>{true, true, true, false, false, false, false, false, false,
                                     false, false});
    CHECK(testing::ok(f.ob->rows_exist({})).empty());

    // Acked: gone. Dead: still there (it may be replayed).
    std::vector<RowKey> acked{rows[1].key()}, buried{rows[2].key()};
    REQUIRE(f.ob->ack(acked, 3, nullptr).is_ok());
    REQUIRE(f.ob->bury(buried, "rejected").is_ok());
    found = testing::ok(f.ob->rows_exist({k + "0", k + "4", k + "8"}));
    REQUIRE(st.is_ok());
    CHECK(found == std::vector<bool>{true, false, true});

    // The relay asks on a read-only connection of its own, beside the writer.
    auto reader = Outbox::open({f.path, config::Synchronous::normal, true});
    found = testing::ok(reader->rows_exist({k + "0", k + "4", k + "8"}));
    REQUIRE(st.is_ok());
    CHECK(found == std::vector<bool>{true, false, true});
    std::vector<RowKey> first{rows[0].key()};
    REQUIRE(f.ob->ack(first, 3, nullptr).is_ok());
    found = testing::ok(reader->rows_exist({k + "0", k + "8"}));
    REQUIRE(st.is_ok());
    CHECK(found == std::vector<bool>{false, true});
  }

  TEST_CASE("lease: files take turns, each file's rows in order, per lane") {
    Fixture f;
    int64_t a = f.add("a.log"), b = f.add("b.log"), c = f.add("c.log");
    std::string text;
    for (int i = 0; i < 10; ++i) text += "line" + std::to_string(i) + "\n";   // 6 bytes each
    for (int64_t id : {a, b, c}) REQUIRE(f.append(f.chunk(id, text, 0)).is_ok());
    outbox::LeaseCursor cur;
    // Batches of 4: a's first 4, then b's, then c's, then a's next 4: no file
    // waits behind another's whole backlog.
    std::vector<std::pair<int64_t, int64_t>> got;   // (file, offset) in lease order
    for (int i = 0; i < 4; ++i) {
      auto rows = testing::ok(f.ob->lease(cur, 0, 1, 4, 1 << 20));
      REQUIRE(rows.size() == 4);
      for (const auto& r : rows) CHECK(r.file == rows[0].file);
      for (const auto& r : rows) got.emplace_back(r.file, r.offset);
    }
    CHECK(got[0] == std::pair<int64_t, int64_t>{a, 0});
    CHECK(got[4] == std::pair<int64_t, int64_t>{b, 0});
    CHECK(got[8] == std::pair<int64_t, int64_t>{c, 0});
    CHECK(got[12] == std::pair<int64_t, int64_t>{a, 24});
    // Whatever the batch size, every row once, each file's rows in order.
    outbox::LeaseCursor cur2;
    std::map<int64_t, int64_t> last;
    size_t n = 0;
    for (;;) {
      auto rows = testing::ok(f.ob->lease(cur2, 0, 1, 7, 1 << 20));
      if (rows.empty()) break;
      for (const auto& r : rows) {
        auto it = last.find(r.file);
        if (it != last.end()) CHECK(r.offset > it->second);
        last[r.file] = r.offset;
        ++n;
      }
    }
    CHECK(n == 30);
    // Lanes: only the files with file % lanes == lane.
    outbox::LeaseCursor lane_cur;
    auto lane = testing::ok(f.ob->lease(lane_cur, static_cast<int>(b % 2), 2, 100, 1 << 20));
    for (const auto& r : lane) CHECK(r.file % 2 == b % 2);
    CHECK(lane.size() == (b % 2 == a % 2 ? 20u : 10u));
    outbox::LeaseCursor capped_cur;
    auto capped = testing::ok(f.ob->lease(capped_cur, 0, 1, 100, 10));
    CHECK(capped.size() == 2);   // stops once max_bytes is reached
    // Rows the caller has in flight are passed over.
    outbox::LeaseCursor skip_cur;
    auto skipped = testing::ok(f.ob->lease(skip_cur, 0, 1, 100, 1 << 20, [&](const RowKey& k) {
      return k.file == a;
    }));
    CHECK(skipped.size() == 20);
  }

  TEST_CASE("lease marks runs: a dead row or a row in flight starts a new one") {
    Fixture f;
    int64_t a = f.add("a.log"), b = f.add("b.log");
    REQUIRE(f.append(f.chunk(a, "0\n1\n2\n3\n4\n", 0)).is_ok());   // offsets 0, 2, 4, 6, 8
    REQUIRE(f.append(f.chunk(b, "x\ny\n", 0)).is_ok());
    auto rows = f.lease_all();
    REQUIRE(rows.size() == 7);
    std::vector<RowKey> dead{rows[2].key()};   // a's offset 4
    REQUIRE(f.ob->bury(dead, "rejected").is_ok());
    outbox::LeaseCursor cur;
    auto again = testing::ok(f.ob->lease(cur, 0, 1, 100, 1 << 20, [](const RowKey& k) {
      return k.offset == 8;   // in flight
    }));
    std::vector<std::tuple<int64_t, int64_t, bool>> seen;
    for (const auto& r : again) seen.emplace_back(r.file, r.offset, r.joins_previous);
    CHECK(seen == std::vector<std::tuple<int64_t, int64_t, bool>>{
                      {a, 0, false}, {a, 2, true}, {a, 6, false}, {b, 0, false}, {b, 2, true}});
  }

  TEST_CASE("ack deletes runs as ranges; a range holding other rows deletes row by row") {
    Fixture f;
    int64_t a = f.add("a.log");
    REQUIRE(f.append(f.chunk(a, "0\n1\n2\n3\n", 0)).is_ok());   // offsets 0, 2, 4, 6
    auto rows = f.lease_all();
    REQUIRE(rows.size() == 4);
    std::vector<RowKey> run{rows[0].key(), rows[1].key()};
    REQUIRE(run[1].joins_previous);
    REQUIRE(f.ob->ack(run, 2).is_ok());
    CHECK(f.lease_all().size() == 2);
    CHECK(f.ob->backlog().rows == 2);
    // A caller that claims rows 4 and 8 are one run while row 6 lies between:
    // the range would delete 6 too (a line never delivered). It is rolled back
    // and only the rows named are deleted.
    RowKey first = rows[2].key(), last{a, rows[3].inode, 8, true};
    REQUIRE(f.append(f.chunk(a, "4\n", 8)).is_ok());
    std::vector<RowKey> bad{first, last};
    REQUIRE(f.ob->ack(bad, 2).is_ok());
    auto left = f.lease_all();
    REQUIRE(left.size() == 1);
    CHECK(left[0].offset == 6);
    CHECK(f.ob->backlog().rows == 1);
  }

  TEST_CASE("failed rows count attempts and become dead at max_attempts") {
    Fixture f;
    int64_t id = f.add("a.log");
    REQUIRE(f.append(f.chunk(id, "x\ny\n", 0)).is_ok());
    auto rows = f.lease_all();
    std::vector<RowKey> ids{rows[0].key(), rows[1].key()};
    std::vector<RowKey> dead;
    for (const RowKey& d : testing::ok(f.ob->fail(ids, "503 from downstream", 3))) dead.push_back(d);
    for (const RowKey& d : testing::ok(f.ob->fail(ids, "503 from downstream", 3))) dead.push_back(d);
    CHECK(dead.empty());
    CHECK(f.lease_all()[0].attempts == 2);
    for (const RowKey& d : testing::ok(f.ob->fail(ids, "503 from downstream", 3))) dead.push_back(d);
    CHECK(dead.size() == 2);
    CHECK(f.lease_all().empty());
    auto s = testing::ok(f.ob->summary());
    CHECK(s.dead == 2);
    REQUIRE(s.dead_by_error.size() == 1);
    CHECK(s.dead_by_error[0].first == "503 from downstream");
    CHECK(f.ob->backlog().rows == 2);   // dead rows are kept, never dropped
  }

  TEST_CASE("max_attempts = 0 never dead-letters; bury does at once") {
    Fixture f;
    int64_t id = f.add("a.log");
    REQUIRE(f.append(f.chunk(id, "x\ny\n", 0)).is_ok());
    auto rows = f.lease_all();
    std::vector<RowKey> one{rows[0].key()}, two{rows[1].key()}, dead;
    for (int i = 0; i < 20; ++i) for (const RowKey& d : testing::ok(f.ob->fail(one, "timeout", 0))) dead.push_back(d);
    CHECK(dead.empty());
    REQUIRE(f.ob->bury(two, "400 bad record").is_ok());
    auto left = f.lease_all();
    REQUIRE(left.size() == 1);
    CHECK(left[0].attempts == 20);
  }
}
