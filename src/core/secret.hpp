// Secrets (passwords, tokens) named in the configuration by file or by
// environment variable, never by value. Thread-safe (no shared state).
#pragma once

#include <string>

namespace tailbox {

// Reads the secret from `file` (trailing newlines cut; warns once if other
// users can read the file) or from the environment variable `env`; exactly one
// of them is non-empty. `what` names the setting in messages ("sasl_password").
// Throws std::runtime_error when both are given, when the file cannot be read
// or is empty, or when the variable is unset or empty. The secret itself never appears in a message.
std::string read_secret(const std::string& what, const std::string& file, const std::string& env);

}  // namespace tailbox
