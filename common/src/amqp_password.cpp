#include "pgfanout/amqp_password.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace pgfanout {
namespace {

// A password file is a few bytes; a path to /dev/zero or a log file is a mistake that
// must not be read to the end.
constexpr std::size_t kMaxPasswordFileBytes = 4096;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

std::string read_small_file(const std::string& path) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rbe"));
  if (!file) throw std::invalid_argument("cannot read '" + path + "': " + std::strerror(errno));
  std::string contents(kMaxPasswordFileBytes + 1, '\0');
  std::size_t n = std::fread(contents.data(), 1, contents.size(), file.get());
  if (std::ferror(file.get())) {
    throw std::invalid_argument("cannot read '" + path + "': " + std::strerror(errno));
  }
  if (n > kMaxPasswordFileBytes) {
    throw std::invalid_argument("'" + path + "' is longer than " +
                                std::to_string(kMaxPasswordFileBytes) +
                                " bytes: not a password file");
  }
  contents.resize(n);
  return contents;
}

}  // namespace

std::string password_from_file_contents(std::string_view contents, std::string_view path) {
  if (contents.ends_with('\n')) contents.remove_suffix(1);
  if (contents.ends_with('\r')) contents.remove_suffix(1);
  if (contents.empty()) throw std::invalid_argument("'" + std::string(path) + "' is empty");
  if (contents.find_first_of("\r\n") != std::string_view::npos) {
    throw std::invalid_argument("'" + std::string(path) +
                                "' holds more than one line; it must hold the password alone");
  }
  // rabbitmq-c takes the password as a C string: it would end at a NUL.
  if (contents.find('\0') != std::string_view::npos) {
    throw std::invalid_argument("'" + std::string(path) + "' holds a NUL byte");
  }
  return std::string(contents);
}

std::optional<std::string> amqp_password(const std::string& file, const char* env_value) {
  if (!file.empty()) return password_from_file_contents(read_small_file(file), file);
  if (env_value != nullptr && *env_value != '\0') return std::string(env_value);
  return std::nullopt;
}

}  // namespace pgfanout
