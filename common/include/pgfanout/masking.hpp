#pragma once

#include <string>
#include <string_view>

namespace pgfanout {

/// A libpq conninfo (key=value form or postgres:// URI) with any password replaced by
/// `****`, fit for logs.
std::string mask_conninfo(std::string_view conninfo);

/// Any URL-like text (`scheme://user:pass@host/...`) with the password replaced by `****`.
std::string mask_url(std::string_view url);

}  // namespace pgfanout
