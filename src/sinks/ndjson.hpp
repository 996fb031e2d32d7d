// NDJSON encoding of records, shared by the sinks that write JSON lines.
// One object per record: {"_id", "host", "source", "path", "offset",
// "ingest_time", "message"} plus "fields" (parsed), "parse_error", and
// "message_base64" when the line is not valid UTF-8 (then "message" holds it
// with U+FFFD replacements, and the exact bytes are in message_base64).
// Thread-safe (pure functions).
#pragma once

#include <string>
#include <string_view>

#include "core/record.hpp"
#include "core/utf8.hpp"

namespace tailbox::sinks {

void append_ndjson(std::string& out, const Record& record, std::string_view id_field = "_id");

// The "_id" of one NDJSON record line (without its newline), or "" when the
// line is not a JSON object with a string "_id". Fast for lines as
// append_ndjson() writes them ("_id" first, no escapes); any other object is
// parsed whole.
std::string ndjson_record_key(std::string_view line);

using tailbox::valid_utf8;
std::string base64(std::string_view bytes);
// "2026-11-27T20:55:17.123Z"
std::string rfc3339_ms(int64_t unix_ms);

}  // namespace tailbox::sinks
