#include "manifest.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "errors.h"
#include "json.h"

namespace segexport {

namespace {

// The bundle formats this program reads (segexport.manifest.READABLE_VERSIONS): version 2 added fields
// for Python's verifier (the parity policy, a manifest digest), 3 the "device" the artifact was compiled for.
constexpr std::array<int, 3> kFormatVersions{1, 2, 3};

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

// A JSON value as the manifest spells it, for messages: numbers without trailing zeros, strings quoted.
std::string json_text(const json::Value& v) {
  std::ostringstream out;
  switch (v.type) {
    case json::Value::Type::Number: out << v.number; break;
    case json::Value::Type::String: out << '"' << v.string << '"'; break;
    case json::Value::Type::Bool: out << (v.boolean ? "true" : "false"); break;
    case json::Value::Type::Null: out << "null"; break;
    default: out << (v.is_array() ? "[...]" : "{...}");
  }
  return out.str();
}

// Refuse a manifest path that leaves the bundle: absolute, climbing with "..", or a symlink whose
// target lies outside (the bundle folder itself may be reached through links).
void check_inside(const std::string& bundle_dir, const std::string& name, const std::string& what) {
  namespace fs = std::filesystem;
  const std::string where = "bundle '" + bundle_dir + "': manifest " + what + " names '" + name + "'";
  if (name.empty() || name.find('\0') != std::string::npos) throw UserError(where + ", which is not a relative path");
  const fs::path relative(name);
  bool climbs = relative.has_root_path();
  for (const fs::path& part : relative) climbs = climbs || part == "..";
  if (climbs) throw UserError(where + ", a path outside the bundle; only paths inside it are allowed");
  std::error_code error;
  const fs::path root = fs::weakly_canonical(fs::absolute(bundle_dir), error);
  const fs::path resolved = error ? fs::path() : fs::weakly_canonical(fs::absolute(bundle_dir) / relative, error);
  if (error) throw UserError(where + ", which cannot be resolved (" + error.message() + ")");
  auto [end_of_root, unused] = std::mismatch(root.begin(), root.end(), resolved.begin(), resolved.end());
  if (end_of_root != root.end()) {
    throw UserError(where + ", a symlink that leads outside the bundle; only files inside it are allowed");
  }
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
  const bool known = version.is_number() && std::any_of(kFormatVersions.begin(), kFormatVersions.end(), [&](int v) {
    return version.number == static_cast<double>(v);
  });
  if (!known) {
    std::string readable;
    for (int v : kFormatVersions) readable += (readable.empty() ? "" : ", ") + std::to_string(v);
    throw UserError("bundle '" + bundle_dir + "' has format_version " + json_text(version) + "; this program reads " + readable);
  }
  Manifest m;
  m.bundle_dir = bundle_dir;
  m.target = text(root, "target", path);
  m.artifact = text(root, "artifact", path);
  if (m.target != "torchscript" && m.target != "aoti" && m.target != "onnx") {
    throw UserError("bundle '" + bundle_dir + "' holds a '" + m.target +
                    "' artifact; this program runs torchscript, aoti and onnx bundles (segexport build ... --target onnx)");
  }
  // A package compiled for a GPU holds CUDA kernels: this program runs artifacts on the CPU.
  if (const json::Value* device = root.find("device"); device != nullptr && device->is_object()) {
    const json::Value* kind = device->find("kind");
    const json::Value* compiled = device->find("compiled");
    const bool for_gpu = kind != nullptr && kind->is_string() && kind->string == "cuda";
    if (for_gpu && compiled != nullptr && compiled->type == json::Value::Type::Bool && compiled->boolean) {
      const json::Value* name = device->find("name");
      throw UserError("bundle '" + bundle_dir + "' holds a " + m.target + " artifact compiled for a CUDA GPU (" +
                      (name != nullptr && name->is_string() ? name->string : "?") +
                      "); this program runs artifacts on the CPU (rebuild with --device cpu)");
    }
  }
  // Every path the manifest names stays inside the bundle, as segexport.bundle.contained_path demands.
  check_inside(bundle_dir, m.artifact, "\"artifact\"");
  if (const json::Value* hashes = root.find("sha256"); hashes != nullptr && hashes->is_object()) {
    for (const auto& [name, digest] : hashes->object) check_inside(bundle_dir, name, "a \"sha256\" key");
  }
  if (const json::Value* reference = root.find("reference"); reference != nullptr && !reference->is_null()) {
    if (!reference->is_string()) throw UserError(path + ": \"reference\" is not a string");
    check_inside(bundle_dir, reference->string, "\"reference\"");
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
