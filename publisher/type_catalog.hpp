#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>

#include <pqxx/connection>
#include <pqxx/transaction_base>

#include "row_json.hpp"

namespace pgfanout {

/// The shapes of column types (row_json.hpp), read from the primary's catalog and kept by
/// type OID. Only catalog rows are read, with bound parameters: no type's functions run
/// here, whoever owns the type.
///
/// A shape follows PostgreSQL 15's jsonb_categorize_type: domains resolve to their base
/// type at any depth; a true array (typsubscript array_subscript_handler) to its element's
/// shape with the element type's typdelim; a composite to its attributes that are not
/// dropped, in attnum order; a type with an OID of at least 16384 that has a function
/// cast to json (pg_cast, method 'f') to TextForm; any other type to String.
///
/// A type changed after it was read (ALTER TYPE ... ADD ATTRIBUTE, a new cast) keeps its
/// old shape until forget_all(): call it when the decoder sees a new Relation message.
///
/// The catalog is read as it is now, while the walsender writes each value with its type
/// as it was when the change was written (its historic snapshot). For a composite altered
/// in between (ALTER TYPE ADD/DROP ATTRIBUTE is allowed while columns use the type) the
/// shape can be newer than the text: added attributes read as null (row_json), but after a
/// DROP ATTRIBUTE a value with as many fields as the new type is read with the new names,
/// which no catalog read can tell apart.
class TypeCatalog {
 public:
  /// `conn` must outlive the catalog and have no transaction open when shape() runs.
  explicit TypeCatalog(pqxx::connection& conn);

  /// The shape of `type_oid`. Throws std::runtime_error for an OID the catalog does not
  /// know or types nested deeper than PostgreSQL allows; lets libpqxx's errors through.
  std::shared_ptr<const TypeShape> shape(std::uint32_t type_oid);

  /// Forgets every shape read so far.
  void forget_all();

 private:
  std::shared_ptr<const TypeShape> load(pqxx::transaction_base& tx, std::uint32_t type_oid, int depth);

  pqxx::connection& conn_;
  std::unordered_map<std::uint32_t, std::shared_ptr<const TypeShape>> shapes_;
};

}  // namespace pgfanout
