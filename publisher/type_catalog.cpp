#include "type_catalog.hpp"

#include <stdexcept>
#include <string>

#include <pqxx/pqxx>

namespace pgfanout {
namespace {

// Operators are written OPERATOR(pg_catalog.x): a search_path that puts pg_catalog after
// a schema somebody else can create in (ALTER ROLE ... SET search_path) must not let
// their operator run here.

// One type: its kind (typtype), the base type of a domain, the element of a true array
// (as get_element_type() decides: typsubscript is array_subscript_handler, so point,
// name and box, which have typelem too, are not arrays) with its delimiter, and the
// relation of a composite.
constexpr const char* kTypeSql = R"sql(
SELECT t.typtype, t.typbasetype,
       CASE WHEN t.typelem OPERATOR(pg_catalog.<>) 0
             AND t.typsubscript OPERATOR(pg_catalog.=)
                 'pg_catalog.array_subscript_handler'::pg_catalog.regproc
            THEN t.typelem ELSE 0 END AS array_element,
       e.typdelim, t.typrelid
  FROM pg_catalog.pg_type t
  LEFT JOIN pg_catalog.pg_type e ON e.oid OPERATOR(pg_catalog.=) t.typelem
 WHERE t.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid
)sql";

constexpr const char* kAttributesSql = R"sql(
SELECT attname, atttypid
  FROM pg_catalog.pg_attribute
 WHERE attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid
   AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped
 ORDER BY attnum
)sql";

// What find_coercion_pathway(json, type, COERCION_EXPLICIT) calls a function cast.
constexpr const char* kCastToJsonSql = R"sql(
SELECT EXISTS (SELECT FROM pg_catalog.pg_cast
                WHERE castsource OPERATOR(pg_catalog.=) $1::pg_catalog.oid
                  AND casttarget OPERATOR(pg_catalog.=) 'pg_catalog.json'::pg_catalog.regtype
                  AND castmethod OPERATOR(pg_catalog.=) 'f'::pg_catalog."char")
)sql";

// Below this OID a type is built in, and jsonb_categorize_type looks for no cast.
constexpr std::uint32_t kFirstNormalObjectId = 16384;

// Composites and domains in each other, and arrays of them, cannot nest without bound
// (PostgreSQL refuses a type that contains itself); this bounds a catalog that changes
// while it is read.
constexpr int kMaxDepth = 100;

}  // namespace

TypeCatalog::TypeCatalog(pqxx::connection& conn) : conn_(conn) {}

std::shared_ptr<const TypeShape> TypeCatalog::shape(std::uint32_t type_oid) {
  if (auto found = shapes_.find(type_oid); found != shapes_.end()) return found->second;
  // One snapshot for every row a shape is made of (a composite and its attributes' types
  // as they were together).
  pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(conn_);
  auto result = load(tx, type_oid, 0);
  tx.commit();
  return result;
}

void TypeCatalog::forget_all() { shapes_.clear(); }

std::shared_ptr<const TypeShape> TypeCatalog::load(pqxx::transaction_base& tx, std::uint32_t type_oid,
                                                   int depth) {
  if (auto found = shapes_.find(type_oid); found != shapes_.end()) return found->second;
  if (depth > kMaxDepth) throw std::runtime_error("type_catalog: types nested too deep at type " + std::to_string(type_oid));
  using Kind = TypeShape::Kind;
  auto shape = std::make_shared<TypeShape>();
  std::uint32_t base = type_oid;
  pqxx::result rows = tx.exec_params(kTypeSql, base);
  for (int domains = 0;; ++domains) {
    if (rows.empty()) throw std::runtime_error("type_catalog: no type with OID " + std::to_string(base));
    if (rows[0][0].as<std::string>() != "d") break;
    if (domains > kMaxDepth) throw std::runtime_error("type_catalog: domains nested too deep at type " + std::to_string(type_oid));
    base = rows[0][1].as<std::uint32_t>();
    rows = tx.exec_params(kTypeSql, base);
  }
  const auto row = rows[0];
  switch (base) {
    case 16: shape->kind = Kind::Bool; break;           // bool
    case 20:                                            // int8
    case 21:                                            // int2
    case 23:                                            // int4
    case 700:                                           // float4
    case 701:                                           // float8
    case 1700: shape->kind = Kind::Number; break;       // numeric
    case 114: shape->kind = Kind::Json; break;          // json
    case 3802: shape->kind = Kind::Jsonb; break;        // jsonb
    case 1082: shape->kind = Kind::Date; break;         // date
    case 1114: shape->kind = Kind::Timestamp; break;    // timestamp
    case 1184: shape->kind = Kind::TimestampTz; break;  // timestamptz
    default:
      if (auto element = row[2].as<std::uint32_t>(); element != 0) {
        shape->kind = Kind::Array;
        const std::string delimiter = row[3].as<std::string>();
        if (delimiter.size() != 1) throw std::runtime_error("type_catalog: unusual delimiter of type " + std::to_string(element));
        shape->delimiter = delimiter[0];
        shape->element = load(tx, element, depth + 1);
        shape->bare = base == 22 || base == 30;  // int2vector, oidvector
      } else if (row[0].as<std::string>() == "c") {
        shape->kind = Kind::Composite;
        for (const auto& attribute : tx.exec_params(kAttributesSql, row[4].as<std::uint32_t>())) {
          shape->fields.emplace_back(attribute[0].as<std::string>(),
                                     load(tx, attribute[1].as<std::uint32_t>(), depth + 1));
        }
      } else if (base >= kFirstNormalObjectId && tx.exec_params1(kCastToJsonSql, base)[0].as<bool>()) {
        shape->kind = Kind::TextForm;
      } else {
        shape->kind = Kind::String;
      }
  }
  set_text_need(*shape);
  shapes_.emplace(type_oid, shape);
  return shape;
}

}  // namespace pgfanout
