// The fields of a bundle's manifest.json that running the artifact needs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace segexport {

// One input or output; symbolic dims ("batch", "height", "width") are -1.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;
};

struct Manifest {
  std::string bundle_dir;
  std::string target;    // "torchscript", "aoti" or "onnx" (others are refused when loading)
  std::string artifact;  // path inside bundle_dir (load_manifest refuses one that leaves it)
  std::string arch;
  std::string activation;  // "" when none; "sigmoid" makes 0.5 the mask threshold
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  bool dynamic = false;
  int64_t stride = 1;  // H and W must be multiples of this in dynamic bundles
  // Normalization of 8-bit images: x in [0, 255] -> range_lo..range_hi -> (x - mean) / stdev.
  std::vector<double> mean;
  std::vector<double> stdev;
  double range_lo = 0.0;
  double range_hi = 1.0;
  bool bgr = false;

  std::string artifact_path() const { return bundle_dir + "/" + artifact; }
};

// Read `bundle_dir`/manifest.json; throws UserError when it is missing, not JSON, of another format_version,
// names a path outside the bundle, or is not a bundle this program runs.
Manifest load_manifest(const std::string& bundle_dir);

// "1x3x64x64", with symbolic dims shown as "?".
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace segexport
