#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pgfanout {

/// The AMQP password given apart from the URL, so that no command line shows it
/// (INTERFACE.md, "Additions"): the one line of `file` (--amqp-password-file) when `file`
/// is not empty, else `env_value` (PGFANOUT_AMQP_PASSWORD) when it is set and not empty,
/// else nullopt and the URL's own password stands. Taken as it is: no percent-decoding.
/// Throws std::invalid_argument naming the file (never its contents) when the file
/// cannot be read or is not one non-empty line.
std::optional<std::string> amqp_password(const std::string& file, const char* env_value);

/// The password in a password file's `contents`: its one line, without the line end.
/// Throws std::invalid_argument, naming `path`, for an empty file or more than one line.
std::string password_from_file_contents(std::string_view contents, std::string_view path);

}  // namespace pgfanout
