#include "manifest.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "errors.h"
#include "json.h"

namespace segexport {

namespace {

constexpr int kFormatVersion = 1;

const json::Value& member(const json::Value& obj, const std::string& key, const std::string& where) {
  const json::Value* v = obj.find(key);
  if (v == nullptr) throw UserError(where + " has no \"" + key + "\" field; is this a segexport bundle?");
  return *v;
}

std::string text(const json::Value& obj, const std::string& key, const std::string& where) {
  const json::Value& v = member(obj, key, where);
  if (!v.is_string()) throw UserError(where + ": \"" + key + "\" is not a string");
  return v.string;
}

std::vector<double> numbers(const json::Value* v) {
  std::vector<double> out;
  if (v == nullptr || !v->is_array()) return out;
  for (const auto& x : v->array) {
    if (!x.is_number()) return {};
    out.push_back(x.number);
  }
  return out;
}

std::vector<TensorSpec> tensors(const json::Value& obj, const std::string& key, const std::string& where) {
  const json::Value& list = member(obj, key, where);
  if (!list.is_array() || list.array.empty()) throw UserError(where + ": \"" + key + "\" is not a non-empty list");
  std::vector<TensorSpec> out;
  for (const auto& entry : list.array) {
    TensorSpec t;
    t.name = text(entry, "name", where + " " + key);
    t.dtype = text(entry, "dtype", where + " " + key);
    const json::Value& shape = member(entry, "shape", where + " " + key);
    if (!shape.is_array()) throw UserError(where + ": the shape of \"" + t.name + "\" is not a list");
    for (const auto& d : shape.array) t.shape.push_back(d.is_number() ? static_cast<int64_t>(d.number) : -1);
    out.push_back(t);
  }
  return out;
}

}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += "x";
    s += shape[i] < 0 ? "?" : std::to_string(shape[i]);
  }
  return s;
}

Manifest load_manifest(const std::string& bundle_dir) {
  const std::string path = bundle_dir + "/manifest.json";
  std::ifstream file(path, std::ios::binary);
  if (!file) throw UserError("'" + bundle_dir + "' is not a segexport bundle: it has no readable manifest.json");
  std::stringstream buffer;
  buffer << file.rdbuf();
  json::Value root;
  try {
    root = json::parse(buffer.str());
  } catch (const std::runtime_error& e) {
    throw UserError("'" + path + "' is not valid JSON (" + e.what() + ")");
  }
  if (!root.is_object()) throw UserError("'" + path + "' is not a JSON object");

  const json::Value& version = member(root, "format_version", path);
  if (!version.is_number() || static_cast<int>(version.number) != kFormatVersion) {
    throw UserError("bundle '" + bundle_dir + "' has an unsupported format_version; this program reads " +
                    std::to_string(kFormatVersion));
  }
  Manifest m;
  m.bundle_dir = bundle_dir;
  m.target = text(root, "target", path);
  m.artifact = text(root, "artifact", path);
  if (m.target != "torchscript" && m.target != "aoti") {
    throw UserError("bundle '" + bundle_dir + "' holds a '" + m.target +
                    "' artifact; this program runs torchscript and aoti bundles (segexport build ... --target torchscript)");
  }
  if (m.artifact.empty() || m.artifact.find('/') != std::string::npos) {
    throw UserError(path + ": \"artifact\" must be a file name inside the bundle");
  }
  const json::Value* arch = root.find("arch");
  m.arch = arch != nullptr && arch->is_string() ? arch->string : "?";
  m.inputs = tensors(root, "inputs", path);
  m.outputs = tensors(root, "outputs", path);
  if (m.inputs.size() != 1 || m.inputs[0].shape.size() != 4) {
    throw UserError(path + ": expected one NCHW input, found " + std::to_string(m.inputs.size()) + " input(s)");
  }
  if (const json::Value* exp = root.find("export")) {
    if (const json::Value* d = exp->find("dynamic"); d != nullptr && d->type == json::Value::Type::Bool) m.dynamic = d->boolean;
    if (const json::Value* s = exp->find("stride"); s != nullptr && s->is_number()) m.stride = std::max<int64_t>(1, static_cast<int64_t>(s->number));
  }
  if (const json::Value* args = root.find("arch_args")) {
    if (const json::Value* a = args->find("activation"); a != nullptr && a->is_string()) m.activation = a->string;
  }
  if (const json::Value* norm = root.find("normalization"); norm != nullptr && norm->is_object()) {
    m.mean = numbers(norm->find("mean"));
    m.stdev = numbers(norm->find("std"));
    std::vector<double> range = numbers(norm->find("input_range"));
    if (range.size() == 2) {
      m.range_lo = range[0];
      m.range_hi = range[1];
    }
    if (const json::Value* space = norm->find("input_space"); space != nullptr && space->is_string()) m.bgr = space->string == "BGR";
  }
  std::ifstream artifact(m.artifact_path(), std::ios::binary);
  if (!artifact) throw UserError("bundle '" + bundle_dir + "' lacks its artifact " + m.artifact);
  return m;
}

}  // namespace segexport
