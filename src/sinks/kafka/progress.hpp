// The kafka sink's progress record: what one Kafka transaction committed, and
// every transaction whose outbox ack had not committed yet. Written into the
// compacted progress topic inside each transaction, read back at open() to
// acknowledge rows already in Kafka without sending them again.
//
// The format (JSON): {"v":1, "host", "txn":"<session>.<seq>", "seq",
// "files": {uid: {"path", "offset": highest}}, "unacked": [{"seq", "files":
// {uid: "first,delta,delta,..."}, "carried"?}]}. Offsets may also be plain
// arrays (records written by earlier versions). Pure; thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/record.hpp"

namespace tailbox::sinks::kafka {

// A Kafka transaction whose rows may still be in the outbox. Own: sent by
// this run, forgotten once its ack committed. Carried: committed to Kafka
// before the last stop (read back from the progress record); its rows are
// acknowledged without sending, and each offset is forgotten once the ack of
// the delivery that skipped it committed.
struct Txn {
  uint64_t seq = 0;
  std::map<std::string, std::set<int64_t>> offsets;  // file uid -> offsets
  bool carried = false;
};

struct Progress {
  uint64_t seq = 0;
  std::string txn;          // "<session>.<seq>"
  std::vector<Txn> listed;  // every transaction the record lists
};

// A file's offsets, ascending, as "first,delta,delta,..." (compact in JSON).
std::string encode_offsets(const std::set<int64_t>& offsets);
// The inverse. Throws std::invalid_argument / std::out_of_range on a part
// that is not a number.
std::set<int64_t> decode_offsets(std::string_view text);

// The progress record of transaction `seq` ("txn" = `txn_id`) that sent
// `sent` (records with keys of make_record_key()), listing `unacked`.
std::string encode_progress(std::string_view host_id, std::string_view txn_id, uint64_t seq,
                            const std::vector<const Record*>& sent, const std::list<Txn>& unacked);

// Parses a progress record. Throws std::exception on anything else.
Progress decode_progress(const std::string& record);

}  // namespace tailbox::sinks::kafka
