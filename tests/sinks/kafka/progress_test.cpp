// The kafka sink's progress record codec, without brokers.
#include "sinks/kafka/progress.hpp"

#include <doctest/doctest.h>

#include <stdexcept>

#include "core/record_key.hpp"

using namespace tailbox;
using namespace tailbox::sinks::kafka;

TEST_SUITE("sinks.kafka.progress") {
  TEST_CASE("offsets round-trip as first,delta,delta") {
    std::set<int64_t> offs{0, 17, 18, 4096, 1'000'000'000'000};
    std::string text = encode_offsets(offs);
    CHECK(text == "0,17,1,4078,999999995904");
    CHECK(decode_offsets(text) == offs);
    CHECK(encode_offsets({}) == "");
    CHECK(decode_offsets("").empty());
  }

  TEST_CASE("a progress record round-trips its transaction and every unacked one") {
    std::string k1 = make_record_key("edge1", "u1", 10), k2 = make_record_key("edge1", "u1", 42),
                k3 = make_record_key("edge1", "u2", 7);
    Record r1, r2, r3;
    r1.key = k1;
    r1.path = "/var/log/a";
    r2.key = k2;
    r2.path = "/var/log/a";
    r3.key = k3;
    r3.path = "/var/log/b";
    std::list<Txn> unacked;
    unacked.push_back({3, {{"u1", {1, 5}}}, true});
    unacked.push_back({5, {{"u1", {10, 42}}, {"u2", {7}}}, false});
    std::string record = encode_progress("edge1", "abcd.5", 5, {&r1, &r2, &r3}, unacked);
    CHECK(record.find(R"("files":{"u1":{"path":"/var/log/a","offset":42},"u2":{"path":"/var/log/b","offset":7}})") !=
          std::string::npos);
    Progress p = decode_progress(record);
    CHECK(p.seq == 5);
    CHECK(p.txn == "abcd.5");
    REQUIRE(p.listed.size() == 2);
    CHECK(p.listed[0].seq == 3);
    CHECK(p.listed[0].offsets == unacked.front().offsets);
    CHECK(p.listed[1].seq == 5);
    CHECK(p.listed[1].offsets == unacked.back().offsets);
  }

  TEST_CASE("records of earlier versions list offsets as plain arrays") {
    Progress p = decode_progress(R"({"v":1,"txn":"s.2","seq":2,"unacked":[{"seq":2,"files":{"u":[9,3]}}]})");
    REQUIRE(p.listed.size() == 1);
    CHECK(p.listed[0].offsets.at("u") == std::set<int64_t>{3, 9});
  }

  TEST_CASE("a malformed record throws instead of being half read") {
    for (const char* bad : {"", "not json", "[]", R"({"txn":"s.1","unacked":[]})",
                            R"({"seq":1,"unacked":[]})", R"({"seq":1,"txn":"s.1"})",
                            R"({"seq":"1","txn":"s.1","unacked":[]})",
                            R"({"seq":1,"txn":"s.1","unacked":[{"files":{}}]})",
                            R"({"seq":1,"txn":"s.1","unacked":[{"seq":1,"files":{"u":"a,b"}}]})",
                            R"({"seq":1,"txn":"s.1","unacked":[{"seq":1,"files":{"u":"1,,2"}}]})",
                            R"({"seq":1,"txn":"s.1","unacked":[{"seq":1,"files":{"u":{"x":1}}}]})"}) {
      INFO(bad);
      CHECK_THROWS(decode_progress(bad));
    }
  }
}
