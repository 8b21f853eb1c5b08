#pragma once

#include <cstdint>
#include <string>

namespace pgfanout {

/// An error text as one log line: trailing newlines dropped, inner ones made spaces
/// (PostgreSQL's messages end with a newline and may span lines).
std::string one_line(std::string text);

/// A count with thousands separators, as the periodic summaries print it: 12,034.
std::string with_thousands(std::uint64_t n);

}  // namespace pgfanout
