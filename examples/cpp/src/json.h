// A minimal JSON reader: enough for a bundle's manifest.json (objects, arrays, strings, numbers, literals).
//
// Written here rather than taken from a library so the example builds against the
// torch wheel alone. Strings are decoded from UTF-8 escapes (\uXXXX, surrogate pairs).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace segexport::json {

class Value {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is_null() const { return type == Type::Null; }
  bool is_number() const { return type == Type::Number; }
  bool is_string() const { return type == Type::String; }
  bool is_array() const { return type == Type::Array; }
  bool is_object() const { return type == Type::Object; }

  // The member `key` of an object, or nullptr when absent (or when this is not an object).
  const Value* find(const std::string& key) const;
};

// Parse `text`; throws std::runtime_error naming the byte offset of the first error.
Value parse(const std::string& text);

}  // namespace segexport::json
