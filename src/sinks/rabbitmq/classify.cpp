#include "sinks/rabbitmq/classify.hpp"

namespace tailbox::sinks::rabbitmq {

namespace {

std::string with_code(const char* what, const Failure& f) {
  std::string out = what;
  if (f.code) {
    out += ' ';
    out += std::to_string(f.code);
  }
  if (!f.text.empty()) {
    out += ": ";
    out += f.text;
  }
  return out;
}

}  // namespace

Verdict classify(const Failure& f) {
  switch (f.kind) {
    case Failure::Kind::returned:
      // The broker routed the message nowhere (312 NO_ROUTE) or it could not
      // be delivered (313 NO_CONSUMERS): sending it again changes nothing
      // until the bindings change; the row is dead-lettered and can be
      // replayed then.
      return {true, with_code("unroutable (basic.return", f) + "): no queue is bound for its routing key"};
    case Failure::Kind::nacked:
      return {false, with_code("the broker nacked the message (basic.nack)", f)};
    case Failure::Kind::channel_close:
    case Failure::Kind::connection_close:
      // 311 CONTENT_TOO_LARGE and 406 PRECONDITION_FAILED on a publish are
      // about the message (its size: max_message_size); 404 (no exchange),
      // 403 (access), 320 (forced), 5xx (broker errors) are about the broker
      // and its configuration, which an operator can fix: retry.
      if (f.code == 311 || (f.code == 406 && f.text.find("message size") != std::string::npos))
        return {true, with_code("the broker refused the message", f)};
      return {false, with_code(f.kind == Failure::Kind::channel_close ? "channel closed by the broker"
                                                                       : "connection closed by the broker",
                               f)};
    case Failure::Kind::timeout:
      return {false, f.text.empty() ? "no publisher confirm within the timeout" : f.text};
    case Failure::Kind::library:
      return {false, f.text.empty() ? "connection error" : f.text};
  }
  return {false, f.text};
}

}  // namespace tailbox::sinks::rabbitmq
