// Record: one line (or multiline event) as a sink sees it. A view: the batch
// that holds the records owns the bytes. Plain value; thread-safe to read.
#pragma once

#include <cstdint>
#include <string_view>

namespace tailbox {

struct Record {
  std::string_view key;         // idempotency key: "<host_id>/<file uid>/<offset>"
  std::string_view host;
  std::string_view source;      // [[source]] name
  std::string_view path;        // the file's path when it was leased
  int64_t offset = 0;           // byte offset of the line in its file
  int64_t ingest_ms = 0;        // when tailbox read it, unix milliseconds
  std::string_view line;        // the raw line, without its terminator
  std::string_view fields;      // parsed fields as a JSON object, or empty (parser = raw
                                // or the line did not parse)
  std::string_view parse_error; // why the parser rejected the line, or empty
};

}  // namespace tailbox
