// Image and raw-tensor files: PNG and PPM/PGM in, 8-bit grayscale PNG and raw float32 out.
//
// Self-contained (an inflate decoder for PNG included) so the example needs nothing
// besides the torch wheel. PNG: 8/16-bit gray, gray+alpha, RGB, RGBA and 8-bit
// palette images, not interlaced. Alpha is dropped; 16-bit samples keep their high byte.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace segexport {

struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;             // 1 (gray) or 3 (RGB)
  std::vector<uint8_t> pixels;  // row-major, channels interleaved
};

// True when the file starts with a PNG or PPM/PGM signature.
bool looks_like_image(const std::string& path);

// Read a PNG or binary PPM (P6) / PGM (P5); throws UserError when it cannot.
Image read_image(const std::string& path);

// Write `pixels` (width*height bytes) as an 8-bit grayscale PNG.
void write_png_gray(const std::string& path, int width, int height, const std::vector<uint8_t>& pixels);

// Read exactly `count` little-endian float32 values; throws UserError when the file size differs.
std::vector<float> read_raw_f32(const std::string& path, size_t count, const std::string& shape_text);

void write_raw_f32(const std::string& path, const float* data, size_t count);

}  // namespace segexport
