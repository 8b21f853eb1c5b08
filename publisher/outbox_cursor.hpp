#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace pgfanout {

/// Where the publisher's next read of the outbox starts, so that it does not walk over
/// the rows it already deleted.
///
/// The outbox is a queue table: every row is inserted once and deleted once shipped. A
/// read "ORDER BY id LIMIT n" from the lowest id walks, in the primary-key index, over
/// every deleted row that vacuum has not removed yet; while any transaction holds the
/// vacuum horizon back (pg_dump, a report, an idle session in a transaction) that is
/// every row deleted since it began, and each read gets slower with every change shipped
/// (300,000 deleted rows: 46 ms per read, bench/outbox_horizon.sh). So reads start after the highest id
/// already read, plus probes of the ids below it that were not seen yet.
///
/// Ids are taken when a capture trigger fires, so they become visible in commit order,
/// not id order: a read can see id 12 while id 11's transaction is still running. Every
/// unseen id below the highest one read is kept as a gap, and read again, until it is
/// seen or cannot appear any more. A gap's id was taken by a transaction that already had
/// an xid (the capture runs after the captured write, or forces one), taken before the
/// read that found the gap; so once a later read's snapshot has an xmin at or above the
/// next xid of that earlier read, every transaction that could still commit the gap's id
/// has ended, and if that later read, complete through the gap, did not return the id, it
/// was rolled back. Gaps are ranges: a big transaction in flight is one gap, not millions.
///
/// Pure logic: OutboxReader feeds it what each read returned and the read's snapshot.
class OutboxCursor {
 public:
  static constexpr std::int64_t kStart = std::numeric_limits<std::int64_t>::min();
  /// Past this many gaps they are merged into one (still exact about what must be read,
  /// only less precise about what need not be).
  static constexpr std::size_t kMaxGaps = 256;

  struct Gap {
    std::int64_t lo;  ///< first unseen id
    std::int64_t hi;  ///< last unseen id
    /// The next xid when the gap was found: every transaction that may still commit an id
    /// in it has an xid below this.
    std::uint64_t before_xid;
    bool operator==(const Gap&) const = default;
  };

  /// The read returns every visible row with an id above this...
  std::int64_t after() const { return after_; }
  /// ...and every visible row with an id in one of these (disjoint, ascending, below after()).
  const std::vector<Gap>& gaps() const { return gaps_; }
  /// No visible row of the outbox has a lower id than this except rows the caller kept
  /// (see OutboxReader): the lowest id a read may return.
  std::int64_t floor() const { return gaps_.empty() ? after_ : gaps_.front().lo - 1; }

  /// After a read: `ids` are the ids it returned, ascending. Every visible row with an id
  /// up to `complete_through` was returned (the highest id returned when the read was cut
  /// short by its limits, kStart's opposite otherwise). `snapshot_xmin` and `next_xid` are
  /// the read's snapshot xmin and the next xid at the time of the read (both 64-bit).
  void observe(std::span<const std::int64_t> ids, std::int64_t complete_through,
               std::uint64_t snapshot_xmin, std::uint64_t next_xid);

  /// Forget everything: the next read starts from the lowest id again. Needed whenever a
  /// row that was read stays in the outbox (not confirmed, or held for its table).
  void rewind() {
    after_ = kStart;
    gaps_.clear();
  }

 private:
  std::int64_t after_ = kStart;
  std::vector<Gap> gaps_;
};

}  // namespace pgfanout
