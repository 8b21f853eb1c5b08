#include "raw_json.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <simdjson.h>

#include "pgfanout/amqp_connection.hpp"
#include "pgfanout/change.hpp"

namespace pgfanout {
namespace {

namespace od = simdjson::ondemand;

// A parser and a padded copy of the text are kept per thread for the next message, up to
// this size; after a bigger text they are let go, so that one huge message does not hold
// several times its size for the life of the process.
constexpr std::size_t kKeptBytes = std::size_t{1} << 20;

static_assert(kDeliveryBodySlack >= simdjson::SIMDJSON_PADDING,
              "deliveries must have room for simdjson to read them in place");

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim_end(std::string_view s) {
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// RFC 8259's number grammar over a whole token; any length is fine.
bool is_number(std::string_view s) {
  std::size_t i = 0;
  auto digits = [&] {
    std::size_t from = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    return i > from;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (i < s.size() && s[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

}  // namespace

// The walk of one text; a friend of JsonIndex, whose nodes it fills.
class JsonWalker {
 public:
  JsonWalker(std::string_view text, std::size_t split_depth, std::size_t max_depth, JsonIndex& index)
      : text_(text), split_depth_(split_depth), max_depth_(max_depth), index_(index), nodes_(index.nodes_) {}

  void run(od::parser& parser, std::size_t capacity) {
    od::document doc;
    check(parser.iterate(text_.data(), text_.size(), capacity).get(doc), nullptr);
    doc_ = &doc;
    od::json_type type;
    check(doc.type().get(type), &doc);
    std::string_view token;
    check(doc.raw_json_token().get(token), &doc);
    nodes_.emplace_back();
    if (type == od::json_type::object || type == od::json_type::array) {
      if (max_depth_ == 0) invalid("nesting deeper than 0 levels", token.data());
      Frame f;
      f.object = type == od::json_type::object;
      if (f.object) {
        od::object o;
        check(doc.get_object().get(o), &doc);
        check(o.begin().get(f.fields), &doc);
      } else {
        od::array a;
        check(doc.get_array().get(a), &doc);
        check(a.begin().get(f.elements), &doc);
      }
      f.node = 0;
      f.start = token.data();
      stack_.push_back(f);
      walk();
      // The root container is closed; nothing but whitespace may follow it.
      const char* at = nullptr;
      auto error = doc.current_location().get(at);
      if (error != simdjson::OUT_OF_BOUNDS) invalid("text after the JSON value", at);
      return;
    }
    // A scalar alone: its token runs to the next structural character, if any.
    decoded_ = {};
    std::string_view value = scalar(token, type, [&](bool decode, std::string_view& s) {
      return decode ? doc.get_string().get(s) : simdjson::SUCCESS;
    });
    std::string_view rest = text_.substr(offset(token.data() + token.size()));
    if (!trim_end(rest).empty()) invalid("text after the JSON value", rest.data());
    set_text(nodes_[0], value);
    if (decoded_.data()) index_.decoded_strings_.emplace_back(0, keep(decoded_));
  }

 private:
  struct Frame {
    bool object = false;
    bool started = false;
    od::object_iterator fields;
    od::array_iterator elements;
    std::uint32_t node = JsonIndex::kNone;  // the recorded node, if within split_depth
    std::uint32_t last_child = JsonIndex::kNone;
    const char* start = nullptr;
  };

  [[noreturn]] void invalid(const std::string& what, const char* at) const {
    std::string where;
    if (at && at >= text_.data() && at <= text_.data() + text_.size()) {
      where = " at byte " + std::to_string(at - text_.data());
    }
    throw std::invalid_argument(what + where);
  }

  void check(simdjson::error_code error, od::document* doc) const {
    if (!error) return;
    const char* at = nullptr;
    if (doc && doc->current_location().get(at)) at = nullptr;
    invalid(simdjson::error_message(error), at);
  }

  std::uint32_t offset(const char* p) const { return static_cast<std::uint32_t>(p - text_.data()); }

  void set_text(JsonIndex::Node& n, std::string_view text) const {
    n.text_at = offset(text.data());
    n.text_size = static_cast<std::uint32_t>(text.size());
  }

  // Keeps a decoded text as long as the index (simdjson's buffer is reused); returns its
  // index in decoded_.
  std::uint32_t keep(std::string_view decoded) {
    index_.decoded_.emplace_back(decoded);
    return static_cast<std::uint32_t>(index_.decoded_.size() - 1);
  }

  // A member name: where it is in the text, or (index in decoded_, kNone).
  struct Name {
    std::uint32_t at = 0;
    std::uint32_t size = 0;
  };

  // Checks a scalar's token (its text up to the next structural character); returns its
  // text. A string is consumed with `consume(decode, s)`, which decodes it into s when
  // `decode` (that checks its escapes; stage 1 of simdjson has checked UTF-8 and control
  // characters already). It must be consumed: when a value is left for the iterator to
  // skip, simdjson takes a string followed by ':' for a member name and skips on unchecked.
  template <class Consume>
  std::string_view scalar(std::string_view token, od::json_type type, Consume&& consume) {
    std::string_view value = trim_end(token);
    switch (type) {
      case od::json_type::string: {
        bool escaped = std::memchr(value.data(), '\\', value.size()) != nullptr;
        std::string_view s;
        check(consume(escaped, s), doc_);
        if (escaped) decoded_ = s.data() ? s : std::string_view("", 0);
        break;
      }
      case od::json_type::number:
        if (!is_number(value)) invalid("a malformed number", value.data());
        break;
      case od::json_type::boolean:
        if (value != "true" && value != "false") invalid("an unexpected literal", value.data());
        break;
      case od::json_type::null:
        if (value != "null") invalid("an unexpected literal", value.data());
        break;
      default:
        invalid("an unexpected value", value.data());
    }
    return value;
  }

  bool records_children(const Frame& f) const { return f.node != JsonIndex::kNone && stack_.size() <= split_depth_; }

  // Adds a node for a member or element of `parent` (when it records its children);
  // returns its index or kNone.
  std::uint32_t add_child(Frame& parent, Name name, std::string_view text) {
    if (!records_children(parent)) return JsonIndex::kNone;
    auto index = static_cast<std::uint32_t>(nodes_.size());
    JsonIndex::Node& n = nodes_.emplace_back();
    n.name_at = name.at;
    n.name_size = name.size;
    if (text.data()) set_text(n, text);
    if (parent.last_child == JsonIndex::kNone) {
      nodes_[parent.node].first_child = index;
    } else {
      nodes_[parent.last_child].next_sibling = index;
    }
    parent.last_child = index;
    return index;
  }

  void visit(od::value& value, Name name) {
    Frame& parent = stack_.back();
    std::string_view token = value.raw_json_token();
    od::json_type type;
    check(value.type().get(type), doc_);
    if (type == od::json_type::object || type == od::json_type::array) {
      if (stack_.size() >= max_depth_) {
        invalid("nesting deeper than " + std::to_string(max_depth_) + " levels", token.data());
      }
      Frame f;
      f.object = type == od::json_type::object;
      if (f.object) {
        od::object o;
        check(value.get_object().get(o), doc_);
        check(o.begin().get(f.fields), doc_);
      } else {
        od::array a;
        check(value.get_array().get(a), doc_);
        check(a.begin().get(f.elements), doc_);
      }
      f.start = token.data();
      f.node = add_child(parent, name, {});  // its text is set once it is closed
      stack_.push_back(f);
      return;
    }
    decoded_ = {};
    std::string_view text = scalar(token, type, [&](bool decode, std::string_view& s) {
      if (decode) return value.get_string().get(s);
      od::raw_json_string raw;
      return value.get_raw_json_string().get(raw);
    });
    std::uint32_t index = add_child(parent, name, text);
    if (index != JsonIndex::kNone && decoded_.data()) index_.decoded_strings_.emplace_back(index, keep(decoded_));
  }

  // A member's name: the text between its quotes when it has no escape (most do), else
  // decoded, which checks the escapes. Dropped (empty) when the member is not recorded.
  Name name_of(od::field& field, bool recorded) {
    const char* begin = field.key().raw();
    const char* value = field.value().raw_json_token().data();
    const void* end = std::memchr(begin, '"', static_cast<std::size_t>(value - begin));
    std::size_t size = end ? static_cast<std::size_t>(static_cast<const char*>(end) - begin) : 0;
    if (end && !std::memchr(begin, '\\', size)) {
      return recorded ? Name{offset(begin), static_cast<std::uint32_t>(size)} : Name{};
    }
    std::string_view key;
    check(field.unescaped_key().get(key), doc_);
    return recorded ? Name{keep(key), JsonIndex::kNone} : Name{};
  }

  void walk() {
    while (!stack_.empty()) {
      Frame& f = stack_.back();
      bool more;
      if (f.object) {
        if (f.started) ++f.fields;
        more = f.fields != f.fields;
      } else {
        if (f.started) ++f.elements;
        more = f.elements != f.elements;
      }
      f.started = true;
      if (!more) {
        close(f);
        stack_.pop_back();
        continue;
      }
      if (f.object) {
        od::field field;
        check((*f.fields).get(field), doc_);
        Name name = name_of(field, records_children(f));
        visit(field.value(), name);
      } else {
        od::value v;
        check((*f.elements).get(v), doc_);
        visit(v, {});
      }
    }
  }

  // The container of `f` has just been closed: the iterator stands on the token after its
  // closing bracket (or at the end), so its text ends at the last non-space before that.
  void close(const Frame& f) {
    if (f.node == JsonIndex::kNone) return;
    const char* end = nullptr;
    auto error = doc_->current_location().get(end);
    if (error == simdjson::OUT_OF_BOUNDS) {
      end = text_.data() + text_.size();
    } else if (error) {
      check(error, nullptr);
    }
    std::string_view text(f.start, static_cast<std::size_t>(end - f.start));
    set_text(nodes_[f.node], trim_end(text));
  }

  std::string_view text_;
  std::size_t split_depth_;
  std::size_t max_depth_;
  JsonIndex& index_;
  std::vector<JsonIndex::Node>& nodes_;
  std::vector<Frame> stack_;
  od::document* doc_ = nullptr;
  std::string_view decoded_;  // the last scalar's decoded text, if it had escapes
};

namespace {

// Node storage is handed from one index to the next in a thread, up to this many nodes.
constexpr std::size_t kKeptNodes = std::size_t{1} << 16;
thread_local std::vector<JsonIndex::Node> spare_nodes;

}  // namespace

JsonIndex::JsonIndex(std::string_view text, std::size_t split_depth, std::size_t max_depth,
                     std::size_t capacity) {
  thread_local od::parser parser;
  thread_local std::string padded;
  nodes_.swap(spare_nodes);
  nodes_.clear();
  const char* data = text.data();
  if (capacity < text.size() + simdjson::SIMDJSON_PADDING) {
    padded.assign(text);
    padded.resize(text.size() + simdjson::SIMDJSON_PADDING, ' ');
    data = padded.data();
    capacity = padded.size();
  }
  struct Release {
    std::size_t size;
    ~Release() {
      if (size <= kKeptBytes) return;
      parser = od::parser();
      std::string().swap(padded);
    }
  } release{text.size()};
  text_ = text;  // the nodes' offsets hold in the padded copy and in `text` alike
  JsonWalker walker(std::string_view(data, text.size()), split_depth, max_depth, *this);
  walker.run(parser, capacity);
}

std::string_view JsonIndex::string(std::uint32_t i) const {
  auto it = std::lower_bound(decoded_strings_.begin(), decoded_strings_.end(), std::pair{i, std::uint32_t{0}});
  if (it != decoded_strings_.end() && it->first == i) return decoded_[it->second];
  std::string_view t = text(i);
  return t.substr(1, t.size() - 2);
}

JsonIndex::~JsonIndex() {
  if (nodes_.capacity() > kKeptNodes) return;
  nodes_.clear();
  spare_nodes.swap(nodes_);
}

void validate_json(std::string_view text, std::size_t max_depth) { JsonIndex(text, 0, max_depth); }

RawObject::RawObject(const nlohmann::json& value) {
  if (value.is_null()) return;
  *this = from_text(value.dump());
}

RawObject RawObject::from_text(std::string_view text) {
  JsonIndex index(text, 1);
  if (index.kind(index.root()) != '{') throw std::invalid_argument("not a JSON object");
  Members members;
  for (std::uint32_t i = index.first_child(index.root()); i != JsonIndex::kNone; i = index.next_sibling(i)) {
    members.emplace_back(index.name(i), index.text(i));
  }
  return from_parts(std::string(index.text(index.root())), std::move(members));
}

RawObject RawObject::from_parts(std::string text, Members members) {
  RawObject o;
  o.members_ = std::move(members);
  o.text_ = std::move(text);
  o.present_ = true;
  return o;
}

const std::string* RawObject::find(std::string_view name) const {
  // The last of duplicate members, as PostgreSQL's jsonb keeps it.
  for (auto it = members_.rbegin(); it != members_.rend(); ++it) {
    if (it->first == name) return &it->second;
  }
  return nullptr;
}

RawObject RawObject::with_values(const std::vector<std::pair<std::string, std::string>>& values) const {
  RawObject o;
  o.present_ = present_;
  o.members_ = members_;
  for (auto& [name, value] : o.members_) {
    for (const auto& [n, v] : values) {
      if (n == name) value = v;
    }
  }
  o.text_ = "{";
  for (std::size_t i = 0; i < o.members_.size(); ++i) {
    if (i) o.text_ += ',';
    append_json_string(o.text_, o.members_[i].first);
    o.text_ += ':';
    o.text_ += o.members_[i].second;
  }
  o.text_ += '}';
  return o;
}

}  // namespace pgfanout
