#include "sinks/kafka/progress.hpp"

#include <boost/json.hpp>

#include "core/record_key.hpp"

namespace tailbox::sinks::kafka {

namespace json = boost::json;

std::string encode_offsets(const std::set<int64_t>& offsets) {
  std::string out;
  int64_t prev = 0;
  for (int64_t o : offsets) {
    if (!out.empty()) out += ',';
    out += std::to_string(o - prev);
    prev = o;
  }
  return out;
}

std::set<int64_t> decode_offsets(std::string_view text) {
  std::set<int64_t> out;
  int64_t prev = 0;
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string_view part = text.substr(0, comma);
    int64_t v = std::stoll(std::string(part));
    prev += v;
    out.insert(prev);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

std::string encode_progress(std::string_view host_id, std::string_view txn_id, uint64_t seq,
                            const std::vector<const Record*>& sent, const std::list<Txn>& unacked) {
  json::object files;
  for (const Record* r : sent) {
    auto key = parse_record_key(r->key);
    if (!key) continue;
    const std::string_view uid = key->uid;
    const int64_t off = key->offset;
    json::value& f = files[uid];
    if (f.is_null()) f = json::object{{"path", r->path}, {"offset", off}};
    else if (f.as_object()["offset"].as_int64() < off) f.as_object()["offset"] = off;
  }
  json::array pending;
  for (const Txn& t : unacked) {
    json::object tf;
    for (auto& [uid, offs] : t.offsets) tf[uid] = encode_offsets(offs);
    json::object entry{{"seq", t.seq}, {"files", std::move(tf)}};
    if (t.carried) entry["carried"] = true;
    pending.push_back(std::move(entry));
  }
  json::object o{{"v", 1},
                 {"host", host_id},
                 {"txn", txn_id},
                 {"seq", seq},
                 {"files", std::move(files)},
                 {"unacked", std::move(pending)}};
  return json::serialize(o);
}

Progress decode_progress(const std::string& record) {
  Progress out;
  json::object o = json::parse(record).as_object();
  out.seq = static_cast<uint64_t>(o.at("seq").to_number<int64_t>());
  out.txn = std::string(o.at("txn").as_string());
  for (auto& tv : o.at("unacked").as_array()) {
    auto& t = tv.as_object();
    Txn txn;
    txn.seq = static_cast<uint64_t>(t.at("seq").to_number<int64_t>());
    for (auto& [uid, offs] : t.at("files").as_object()) {
      auto& set = txn.offsets[std::string(uid)];
      if (offs.is_string()) {
        set = decode_offsets(offs.as_string());
      } else {
        for (auto& off : offs.as_array()) set.insert(off.to_number<int64_t>());
      }
    }
    out.listed.push_back(std::move(txn));
  }
  return out;
}

}  // namespace tailbox::sinks::kafka
