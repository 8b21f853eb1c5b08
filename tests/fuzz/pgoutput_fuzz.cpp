// libFuzzer target: bytes as a replication connection may receive them, through the
// publisher's decoder of the walsender's CopyData framing and of pgoutput messages
// (publisher/pgoutput). Any exception other than ProtocolError, any sanitizer report
// (a read past the buffer, an allocation sized by an unchecked count) and a broken
// invariant below are findings.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "pgoutput.hpp"

namespace {

using namespace pgfanout::pgoutput;

// What a decoded message holds comes from the input: it cannot hold more values than the
// input had bytes.
void check_tuple(const Tuple& t, std::size_t size) {
  if (t.size() > size) std::abort();
}

void decode(std::string_view payload) {
  Message m;
  try {
    m = parse_message(payload);
  } catch (const ProtocolError&) {
    return;
  }
  if (auto* b = std::get_if<Begin>(&m)) {
    if (iso_utc(b->commit_time).empty()) std::abort();
  } else if (auto* c = std::get_if<Commit>(&m)) {
    if (iso_utc(c->commit_time).empty() || format_lsn(c->end_lsn).empty()) std::abort();
  } else if (auto* r = std::get_if<Relation>(&m)) {
    if (r->columns.size() > payload.size() / 10) std::abort();
  } else if (auto* i = std::get_if<Insert>(&m)) {
    check_tuple(i->row, payload.size());
  } else if (auto* u = std::get_if<Update>(&m)) {
    check_tuple(u->old, payload.size());
    check_tuple(u->row, payload.size());
    if (u->old_kind == 0 ? !u->old.empty() : u->old_kind != 'K' && u->old_kind != 'O') std::abort();
  } else if (auto* d = std::get_if<Delete>(&m)) {
    check_tuple(d->old, payload.size());
  } else if (auto* t = std::get_if<Truncate>(&m)) {
    if (t->relids.size() > payload.size() / 4) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);

  // The input as one CopyData message, and its payload as a pgoutput message.
  try {
    auto framed = parse_copy_data(bytes);
    if (auto* x = std::get_if<XLogData>(&framed)) {
      if (x->payload.data() < bytes.data() || x->payload.data() + x->payload.size() != bytes.data() + size)
        std::abort();  // the payload is the rest of the input
      if (iso_utc(x->send_time).empty()) std::abort();
      decode(x->payload);
    } else {
      auto& k = std::get<Keepalive>(framed);
      if (standby_status_update(k.wal_end, k.wal_end, k.wal_end, k.send_time, false).size() != 34) std::abort();
    }
  } catch (const ProtocolError&) {
  }

  // The input as a bare pgoutput message.
  decode(bytes);

  // The input as LSN text: whatever parses prints back to the same LSN.
  if (auto lsn = parse_lsn(bytes)) {
    if (parse_lsn(format_lsn(*lsn)) != lsn) std::abort();
  }
  return 0;
}
