#pragma once

// The logical capture's values: pgoutput hands the publisher each column as the text its
// type's output function wrote in the walsender session, with the column's type OID. A
// change must carry what the server's `to_jsonb()` of that value gives (the trigger
// capture's form), so that listeners apply both capture modes alike. Calling to_jsonb on
// the server would run table owners' code (casts to json, output functions of their
// types) in the publisher's session; instead the publisher rebuilds to_jsonb's result
// from the text, with the catalog consulted only for each type's shape (TypeCatalog).
//
// The result has to_jsonb's meaning: on a server session with kPinnedSettings,
// `$json::jsonb = to_jsonb(value)` holds. For a type whose to_jsonb would call a cast to
// json somebody created (hstore, PostGIS, an enum with such a cast) the value travels as
// its text form instead (TypeShape::Kind::TextForm), which is exact but not to_jsonb's.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgfanout {

/// The settings the walsender session runs with, as libpq `options` text. The converter
/// relies on them: ISO dates (to_jsonb's XSD form differs only by the 'T' and the offset's
/// minutes), offsets in UTC, hex bytea, intervals in the `postgres` style, floats in their
/// shortest exact form, and text in UTF-8 whatever the database's encoding (pgoutput
/// converts values to the client encoding; a message body is JSON, so UTF-8). A check of
/// the result against to_jsonb must run with them too.
inline constexpr std::string_view kPinnedSettings =
    "-c DateStyle=ISO,YMD -c IntervalStyle=postgres -c TimeZone=UTC -c bytea_output=hex "
    "-c extra_float_digits=1 -c client_encoding=UTF8";

/// What to_jsonb makes of a type, as PostgreSQL 15's jsonb_categorize_type decides it
/// (domains already resolved to their base type).
struct TypeShape {
  enum class Kind {
    Bool,
    /// int2/4/8, float4/8, numeric: a JSON number, or a string for NaN and ±Infinity.
    Number,
    /// Any other type: its text output as a JSON string.
    String,
    /// json: its text parsed again (to_jsonb normalises it; the meaning is kept).
    Json,
    Jsonb,
    Date,
    Timestamp,
    TimestampTz,
    Array,
    Composite,
    /// A type whose to_jsonb would call a cast to json a user made (hstore, PostGIS, a
    /// table owner's enum): the value travels as its text form, a JSON string.
    TextForm
  };
  Kind kind = Kind::String;
  std::shared_ptr<const TypeShape> element;  ///< Array: the element type's shape
  char delimiter = ',';                      ///< Array: the element type's typdelim
  /// Array: written without braces, elements split by single spaces, as int2vector and
  /// oidvector are (to_jsonb still makes a JSON array of them).
  bool bare = false;
  /// Composite: the attributes that are not dropped, in attnum order.
  std::vector<std::pair<std::string, std::shared_ptr<const TypeShape>>> fields;
  /// Whether a value's text form travels beside its JSON form (README, "Message format"):
  /// Always for json and TextForm and what holds them, Bounds for arrays and what holds
  /// them (only a value whose text shows lower bounds: see has_array_bounds), else None.
  enum class TextNeed { None, Bounds, Always };
  TextNeed text_need = TextNeed::None;
};

/// Works out shape.text_need from its kind and its element's and fields' (set already).
void set_text_need(TypeShape& shape);

/// Whether the text output of a value (an array, or something holding one) shows an array
/// with lower bounds other than 1: array_out writes those as "[0:1]={...}".
bool has_array_bounds(std::string_view text);

/// Appends to `out` the JSON to_jsonb gives for the value whose text output (under
/// kPinnedSettings) is `text`. A null inside an array or a composite becomes JSON null; a
/// whole value that is SQL NULL is the caller's to handle. Throws std::runtime_error when
/// `text` does not parse as that shape (then `out` may hold part of the value); its
/// message does not quote the value. Throws std::invalid_argument for an Array shape
/// without `element` or a Composite field without a shape (TypeCatalog makes none).
void append_value_json(std::string& out, const TypeShape& shape, std::string_view text);

/// Whether any part of a value of this shape is TextForm (so the change must also carry
/// the text form for exactness).
bool holds_text_form(const TypeShape& shape);

}  // namespace pgfanout
