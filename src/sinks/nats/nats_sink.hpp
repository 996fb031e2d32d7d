// NatsSink (type = "nats"): publishes each record as one message to a NATS
// JetStream stream, on a subject built from a template ("logs.{host}.{source}"),
// with the idempotency key as the Nats-Msg-Id header, and waits for every
// PubAck of the batch before it reports the batch delivered.
//
// Exactly-once, in two parts. Inside the stream's duplicate window the server
// drops a redelivered message by its Nats-Msg-Id. Beyond it (tailbox was down
// longer than the window) the sink relies on its state: every delivered batch
// commits "<stream>:<sequence>" in the outbox together with the deletion of its
// rows, where no message of ours still pending in the outbox lies at or below
// that sequence. At open() the stream is read back after that sequence (our
// subjects only, when the template names {host}); of the Nats-Msg-Ids of this
// host found there, those whose rows are still in the outbox (pending or dead:
// asked through set_outbox_lookup()) were published but never confirmed:
// deliver() acknowledges those records without publishing them again, and
// the state stays below them until then (a dead row holds it until it is
// replayed and delivered, or purged). The others were confirmed and are
// forgotten. While running, a record sent in a failed attempt without an
// answer is published again only while less than half of the window has
// passed since then; later the stream is read back the same way first, and
// those found there are acknowledged without being published (a failed
// read-back is a retry). This needs serial deliveries (serial() is true) and
// a stream that keeps its messages at least as long as tailbox may be down.
//
// libnats blocks (connect, publish when its buffer is full, the wait for
// PubAcks): deliver() runs that part on a thread the sink owns, never on the
// caller's I/O threads, and every wait is bounded by `timeout`. libnats
// reconnects by itself; while it is disconnected deliveries are retried. A
// connection libnats closed for good (e.g. an authorization error on
// reconnect) is opened anew by the next delivery, with the secrets read again.
//
// Thread-safety: open() completes before the first deliver(); deliveries run
// one at a time (serial). libnats' callbacks run on its own threads and meet
// the delivering thread under a mutex; they reach the sink through a registry
// that close() retires, so a late callback never touches a destroyed sink.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/settings.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

namespace nats {

// The sink's configuration, with the default next to each field.
struct Options {
  std::string url = "nats://127.0.0.1:4222";       // one server, or a comma-separated list
  std::string stream;                               // required
  std::string subject = "logs.{host}.{source}";     // placeholders {host} {source}
  bool create_stream = false;                       // false: the stream must exist
  std::vector<std::string> stream_subjects;         // create_stream: default wildcard_subject(subject)
  std::chrono::milliseconds duplicate_window{120'000};  // create_stream only
  int replicas = 1;                                 // create_stream only (1..5)
  std::chrono::milliseconds timeout{10'000};        // per batch (all PubAcks); connect, API calls
  bool ndjson = true;                               // `format` "ndjson" | "raw" (the line)
  std::string user;                                 // with password_file or password_env
  std::string password_file, password_env;
  std::string token_file, token_env;
  std::string credentials_file;                     // a NATS .creds file (JWT + NKey seed)
  std::string tls_ca_file, tls_cert_file, tls_key_file;
};

// Reads every key of the [sink] table that the nats sink knows, without I/O.
// Throws config::ConfigError naming the key. The caller runs finish().
Options parse_options(config::Settings& settings);

// A value made safe as one subject token: '.', '*', '>', whitespace and
// control characters become '_'; an empty value becomes "_".
std::string subject_token(std::string_view value);

// The template with {host} and {source} replaced by their subject_token()s.
std::string subject_for(std::string_view tmpl, std::string_view host, std::string_view source);

// The template with every token that holds a placeholder replaced by "*": the
// subjects a stream needs to catch every host and source.
std::string wildcard_subject(std::string_view tmpl);

// A filter that matches every subject this host publishes on: tokens with
// {source} become "*", {host} is replaced. Without {host} in the template it
// is wildcard_subject(tmpl).
std::string host_filter(std::string_view tmpl, std::string_view host);

// Why the template cannot be used ("" when it can): empty tokens, wildcards,
// whitespace, unknown placeholders.
std::string template_problem(std::string_view tmpl);

// The URL list without user info ("nats://u:p@h:4222" -> "nats://h:4222").
std::string display_url(std::string_view urls);

}  // namespace nats

class NatsSink : public Sink {
 public:
  // Reads and checks the settings (nats::parse_options); no I/O.
  NatsSink(config::Settings& settings, std::string host_id, boost::asio::any_io_executor executor);
  ~NatsSink() override;

  const std::string& name() const override;
  std::string guarantee() const override;
  bool serial() const override { return true; }
  // open() asks it which of the keys read back still have a row in the
  // outbox: only those hold the state (the others were confirmed).
  void set_outbox_lookup(KeysInOutbox lookup) override;
  // Reads the secrets, connects, finds (or creates) the stream and reads it
  // back after the committed sequence. Returns "<stream>:<last sequence>" on
  // first use (or when the stream was recreated). Throws std::runtime_error
  // when it cannot connect or the stream is missing.
  std::optional<std::string> open(const std::optional<std::string>& committed_state) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tailbox::sinks
