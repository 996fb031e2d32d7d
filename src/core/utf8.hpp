// UTF-8 checks for the places that must emit valid JSON. Thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace tailbox {

// Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
bool valid_utf8(std::string_view s);
// s with every byte that is not part of valid UTF-8 replaced by U+FFFD.
std::string repair_utf8(std::string_view s);

}  // namespace tailbox
