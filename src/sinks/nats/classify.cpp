#include "sinks/nats/classify.hpp"

namespace tailbox::sinks::nats {

Verdict classify(const Failure& f) {
  switch (f.kind) {
    case Failure::Kind::oversize:
      // The server closes a connection that sends more than max_payload:
      // caught before anything of the batch is sent.
      return {true, "the message (" + std::to_string(f.size) +
                        " bytes with headers) is larger than the server's max_payload (" +
                        std::to_string(f.limit) + " bytes)"};
    case Failure::Kind::build:
      return {false, "cannot build a message: " + f.text};
    case Failure::Kind::publish:
      if (f.status == NATS_MAX_PAYLOAD)
        return {true, "the message is larger than the server's max_payload"};
      return {false, "publish: " + f.text};
    case Failure::Kind::pub_ack:
      // The stream's max_msg_size: the message will never fit. Every other
      // negative PubAck (no stream, wrong stream, storage, quorum) is about
      // the server, which an operator can fix.
      return {f.js_err == JSStreamMessageExceedsMaximumErr, f.text};
    case Failure::Kind::no_ack:
      return {false, f.text};
    case Failure::Kind::not_connected:
      return {false, "not connected to NATS (reconnecting to " + f.text + ")"};
    case Failure::Kind::connect:
      return {false, "connecting to NATS again: " + f.text};
    case Failure::Kind::read_back:
    case Failure::Kind::other:
      return {false, f.text};
  }
  return {false, f.text};
}

}  // namespace tailbox::sinks::nats
