#pragma once

// One change object as INTERFACE.md specifies it, for tests that write messages by hand.

#include <cstdint>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace pgfanout::test {

inline nlohmann::json change_json(std::int64_t id, const std::string& schema, const std::string& name,
                                  const std::string& op, nlohmann::json new_row, nlohmann::json old_key) {
  return nlohmann::json{{"id", id},
                        {"table", schema + "." + name},
                        {"schema", schema},
                        {"name", name},
                        {"op", op},
                        {"new", std::move(new_row)},
                        {"old", std::move(old_key)},
                        {"ts", "2026-11-21T05:18:39.123456+00:00"}};
}

}  // namespace pgfanout::test
