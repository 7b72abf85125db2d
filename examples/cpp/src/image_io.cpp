#include "image_io.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>

#include "errors.h"

namespace segexport {

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot open input '" + path + "'");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

const uint8_t kPngSignature[8] = {137, 'P', 'N', 'G', '\r', '\n', 26, '\n'};

// ---- checksums -------------------------------------------------------------------------------

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t adler32(const uint8_t* data, size_t n) {
  uint32_t a = 1, b = 0;
  for (size_t i = 0; i < n; ++i) {
    a = (a + data[i]) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

// ---- inflate (RFC 1951), after zlib's puff.c: canonical Huffman codes decoded bit by bit -------

class Inflater {
 public:
  Inflater(const uint8_t* data, size_t size) : in_(data), size_(size) {}

  std::vector<uint8_t> run() {
    bool last = false;
    while (!last) {
      last = bits(1) != 0;
      switch (bits(2)) {
        case 0: stored(); break;
        case 1: fixed(); break;
        case 2: dynamic(); break;
        default: bad("reserved block type");
      }
    }
    return std::move(out_);
  }

  size_t consumed() const { return pos_; }

 private:
  struct Huffman {
    std::array<uint16_t, 16> count{};
    std::vector<uint16_t> symbol;
  };

  const uint8_t* in_;
  size_t size_;
  size_t pos_ = 0;
  uint32_t bitbuf_ = 0;
  int bitcnt_ = 0;
  std::vector<uint8_t> out_;

  [[noreturn]] static void bad(const std::string& what) { throw UserError("corrupt PNG data (" + what + ")"); }

  uint32_t bits(int need) {
    uint32_t val = bitbuf_;
    while (bitcnt_ < need) {
      if (pos_ >= size_) bad("unexpected end of compressed data");
      val |= static_cast<uint32_t>(in_[pos_++]) << bitcnt_;
      bitcnt_ += 8;
    }
    bitbuf_ = val >> need;
    bitcnt_ -= need;
    return val & ((1u << need) - 1);
  }

  void stored() {
    bitbuf_ = 0;
    bitcnt_ = 0;
    if (pos_ + 4 > size_) bad("short stored block");
    unsigned len = in_[pos_] | (in_[pos_ + 1] << 8);
    unsigned nlen = in_[pos_ + 2] | (in_[pos_ + 3] << 8);
    pos_ += 4;
    if (len != (~nlen & 0xFFFF)) bad("stored block length check");
    if (pos_ + len > size_) bad("short stored block");
    out_.insert(out_.end(), in_ + pos_, in_ + pos_ + len);
    pos_ += len;
  }

  static Huffman build(const uint16_t* lengths, int n) {
    Huffman h;
    h.symbol.assign(static_cast<size_t>(n), 0);
    for (int i = 0; i < n; ++i) h.count[lengths[i]]++;
    std::array<uint16_t, 16> offs{};
    for (int len = 1; len < 15; ++len) offs[len + 1] = offs[len] + h.count[len];
    for (int i = 0; i < n; ++i)
      if (lengths[i] != 0) h.symbol[offs[lengths[i]]++] = static_cast<uint16_t>(i);
    return h;
  }

  int decode(const Huffman& h) {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= 15; ++len) {
      code |= static_cast<int>(bits(1));
      int count = h.count[len];
      if (code - count < first) return h.symbol[static_cast<size_t>(index + (code - first))];
      index += count;
      first += count;
      first <<= 1;
      code <<= 1;
    }
    bad("invalid Huffman code");
  }

  void codes(const Huffman& lencode, const Huffman& distcode) {
    static const uint16_t kLenBase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27,
                                          31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const uint16_t kLenExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const uint16_t kDistBase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
                                           1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    static const uint16_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8,
                                            9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    while (true) {
      int sym = decode(lencode);
      if (sym < 256) {
        out_.push_back(static_cast<uint8_t>(sym));
      } else if (sym == 256) {
        return;
      } else {
        sym -= 257;
        if (sym >= 29) bad("invalid length code");
        size_t len = kLenBase[sym] + bits(kLenExtra[sym]);
        int dsym = decode(distcode);
        if (dsym >= 30) bad("invalid distance code");
        size_t dist = kDistBase[dsym] + bits(kDistExtra[dsym]);
        if (dist > out_.size()) bad("distance too far back");
        size_t from = out_.size() - dist;
        for (size_t i = 0; i < len; ++i) out_.push_back(out_[from + i]);
      }
    }
  }

  void fixed() {
    static const auto tables = [] {
      uint16_t lengths[288 + 30];
      int i = 0;
      for (; i < 144; ++i) lengths[i] = 8;
      for (; i < 256; ++i) lengths[i] = 9;
      for (; i < 280; ++i) lengths[i] = 7;
      for (; i < 288; ++i) lengths[i] = 8;
      for (; i < 288 + 30; ++i) lengths[i] = 5;
      return std::make_pair(build(lengths, 288), build(lengths + 288, 30));
    }();
    codes(tables.first, tables.second);
  }

  void dynamic() {
    static const uint8_t kOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    int nlen = static_cast<int>(bits(5)) + 257;
    int ndist = static_cast<int>(bits(5)) + 1;
    int ncode = static_cast<int>(bits(4)) + 4;
    if (nlen > 286 || ndist > 30) bad("too many length or distance codes");
    uint16_t lengths[320] = {0};
    for (int i = 0; i < ncode; ++i) lengths[kOrder[i]] = static_cast<uint16_t>(bits(3));
    Huffman lencode = build(lengths, 19);
    int index = 0;
    while (index < nlen + ndist) {
      int sym = decode(lencode);
      if (sym < 16) {
        lengths[index++] = static_cast<uint16_t>(sym);
        continue;
      }
      uint16_t len = 0;
      int repeat;
      if (sym == 16) {
        if (index == 0) bad("repeat with no first length");
        len = lengths[index - 1];
        repeat = 3 + static_cast<int>(bits(2));
      } else if (sym == 17) {
        repeat = 3 + static_cast<int>(bits(3));
      } else {
        repeat = 11 + static_cast<int>(bits(7));
      }
      if (index + repeat > nlen + ndist) bad("too many lengths");
      while (repeat--) lengths[index++] = len;
    }
    if (lengths[256] == 0) bad("no end-of-block code");
    codes(build(lengths, nlen), build(lengths + nlen, ndist));
  }
};

std::vector<uint8_t> zlib_decompress(const std::vector<uint8_t>& z) {
  if (z.size() < 6) throw UserError("corrupt PNG data (zlib stream too short)");
  if ((z[0] & 0x0F) != 8 || ((z[0] << 8) | z[1]) % 31 != 0 || (z[1] & 0x20)) {
    throw UserError("corrupt PNG data (bad zlib header)");
  }
  Inflater inflater(z.data() + 2, z.size() - 2);
  std::vector<uint8_t> out = inflater.run();
  size_t end = 2 + inflater.consumed();
  if (end + 4 <= z.size()) {
    uint32_t expected = (uint32_t(z[end]) << 24) | (uint32_t(z[end + 1]) << 16) | (uint32_t(z[end + 2]) << 8) | z[end + 3];
    if (expected != adler32(out.data(), out.size())) throw UserError("corrupt PNG data (adler32 mismatch)");
  }
  return out;
}

// ---- PNG ---------------------------------------------------------------------------------------

uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }

uint8_t paeth(int a, int b, int c) {
  int p = a + b - c;
  int pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return static_cast<uint8_t>(a);
  return static_cast<uint8_t>(pb <= pc ? b : c);
}

Image decode_png(const std::vector<uint8_t>& file, const std::string& path) {
  auto fail = [&](const std::string& what) -> UserError { return UserError("cannot read PNG '" + path + "': " + what); };
  size_t pos = 8;
  uint32_t width = 0, height = 0;
  int depth = 0, color = -1;
  std::vector<uint8_t> idat, palette;
  bool ended = false;
  while (!ended) {
    if (pos + 12 > file.size()) throw fail("truncated file");
    uint32_t len = be32(&file[pos]);
    if (len > file.size() - pos - 12) throw fail("truncated chunk");
    const uint8_t* type = &file[pos + 4];
    const uint8_t* data = type + 4;
    if (crc32(type, len + 4) != be32(data + len)) throw fail("chunk CRC mismatch");
    if (std::memcmp(type, "IHDR", 4) == 0) {
      if (len != 13) throw fail("bad IHDR");
      width = be32(data);
      height = be32(data + 4);
      depth = data[8];
      color = data[9];
      if (data[10] != 0 || data[11] != 0) throw fail("unknown compression or filter method");
      if (data[12] != 0) throw fail("interlaced PNGs are not supported; save it without interlacing");
    } else if (std::memcmp(type, "PLTE", 4) == 0) {
      palette.assign(data, data + len);
    } else if (std::memcmp(type, "IDAT", 4) == 0) {
      idat.insert(idat.end(), data, data + len);
    } else if (std::memcmp(type, "IEND", 4) == 0) {
      ended = true;
    }
    pos += 12 + len;
  }
  static const int kSamples[7] = {1, 0, 3, 1, 2, 0, 4};  // samples per pixel by color type
  if (color < 0 || color > 6 || kSamples[color] == 0) throw fail("unknown color type");
  if (width == 0 || height == 0 || width > 65535 || height > 65535) throw fail("unsupported size");
  bool depth_ok = depth == 8 || depth == 16 || ((color == 0 || color == 3) && (depth == 1 || depth == 2 || depth == 4));
  if (!depth_ok || (color == 3 && depth == 16)) throw fail("unsupported bit depth " + std::to_string(depth));
  if (color == 3 && palette.empty()) throw fail("palette image without PLTE chunk");

  const int samples = kSamples[color];
  const size_t bits_per_pixel = static_cast<size_t>(samples) * depth;
  const size_t stride = (width * bits_per_pixel + 7) / 8;
  const size_t bpp = std::max<size_t>(1, bits_per_pixel / 8);
  std::vector<uint8_t> raw = zlib_decompress(idat);
  if (raw.size() < (stride + 1) * height) throw fail("image data shorter than its header says");

  std::vector<uint8_t> prev(stride, 0), row(stride);
  Image img;
  img.width = static_cast<int>(width);
  img.height = static_cast<int>(height);
  img.channels = (color == 0 || color == 4) ? 1 : 3;
  img.pixels.resize(static_cast<size_t>(width) * height * img.channels);
  for (uint32_t y = 0; y < height; ++y) {
    const uint8_t* src = &raw[y * (stride + 1)];
    uint8_t filter = src[0];
    for (size_t i = 0; i < stride; ++i) {
      int a = i >= bpp ? row[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
      int x = src[1 + i];
      switch (filter) {
        case 0: break;
        case 1: x += a; break;
        case 2: x += b; break;
        case 3: x += (a + b) / 2; break;
        case 4: x += paeth(a, b, c); break;
        default: throw fail("unknown row filter " + std::to_string(filter));
      }
      row[i] = static_cast<uint8_t>(x);
    }
    uint8_t* dst = &img.pixels[static_cast<size_t>(y) * width * img.channels];
    for (uint32_t x = 0; x < width; ++x) {
      auto sample = [&](int s) -> unsigned {  // the s-th sample of pixel x, at its bit depth (16-bit: high byte)
        if (depth == 16) return row[(x * samples + s) * 2];
        if (depth == 8) return row[x * samples + s];
        size_t bit = static_cast<size_t>(x) * depth;
        return (row[bit / 8] >> (8 - depth - bit % 8)) & ((1u << depth) - 1);
      };
      if (color == 3) {
        unsigned idx = sample(0);
        if (3 * idx + 2 >= palette.size()) throw fail("palette index out of range");
        for (int ch = 0; ch < 3; ++ch) dst[x * 3 + ch] = palette[3 * idx + ch];
      } else if (img.channels == 1) {
        unsigned v = sample(0);
        dst[x] = static_cast<uint8_t>(depth < 8 ? v * 255 / ((1u << depth) - 1) : v);
      } else {
        for (int ch = 0; ch < 3; ++ch) dst[x * 3 + ch] = static_cast<uint8_t>(sample(ch));
      }
    }
    std::swap(prev, row);
  }
  return img;
}

// ---- PPM / PGM (binary) -----------------------------------------------------------------------

Image decode_pnm(const std::vector<uint8_t>& file, const std::string& path) {
  auto fail = [&](const std::string& what) -> UserError { return UserError("cannot read PPM/PGM '" + path + "': " + what); };
  size_t pos = 2;
  auto number = [&]() -> long {
    while (pos < file.size()) {
      if (file[pos] == '#') {
        while (pos < file.size() && file[pos] != '\n') ++pos;
      } else if (std::isspace(file[pos])) {
        ++pos;
      } else {
        break;
      }
    }
    long v = 0;
    size_t start = pos;
    while (pos < file.size() && file[pos] >= '0' && file[pos] <= '9' && v < 1000000) v = v * 10 + (file[pos++] - '0');
    if (pos == start) throw fail("bad header");
    return v;
  };
  Image img;
  img.channels = file[1] == '6' ? 3 : 1;
  long w = number(), h = number(), maxval = number();
  if (w <= 0 || h <= 0 || w > 65535 || h > 65535 || maxval <= 0 || maxval > 65535) throw fail("bad header values");
  ++pos;  // the single whitespace after maxval
  const size_t sample_bytes = maxval > 255 ? 2 : 1;
  const size_t count = static_cast<size_t>(w) * h * img.channels;
  if (file.size() < pos + count * sample_bytes) throw fail("pixel data shorter than its header says");
  img.width = static_cast<int>(w);
  img.height = static_cast<int>(h);
  img.pixels.resize(count);
  for (size_t i = 0; i < count; ++i) {
    unsigned v = sample_bytes == 2 ? (file[pos + 2 * i] << 8) | file[pos + 2 * i + 1] : file[pos + i];
    img.pixels[i] = static_cast<uint8_t>((v * 255 + maxval / 2) / maxval);
  }
  return img;
}

void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

void chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  put32(out, static_cast<uint32_t>(data.size()));
  size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put32(out, crc32(&out[start], data.size() + 4));
}

}  // namespace

bool looks_like_image(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint8_t head[8] = {0};
  f.read(reinterpret_cast<char*>(head), 8);
  if (f.gcount() >= 8 && std::memcmp(head, kPngSignature, 8) == 0) return true;
  return f.gcount() >= 2 && head[0] == 'P' && (head[1] == '5' || head[1] == '6');
}

Image read_image(const std::string& path) {
  std::vector<uint8_t> file = read_file(path);
  if (file.size() >= 8 && std::memcmp(file.data(), kPngSignature, 8) == 0) return decode_png(file, path);
  if (file.size() >= 2 && file[0] == 'P' && (file[1] == '5' || file[1] == '6')) return decode_pnm(file, path);
  throw UserError("cannot read input '" + path + "': not a PNG, binary PPM/PGM, or raw float32 file (.f32/.raw/.bin)");
}

void write_png_gray(const std::string& path, int width, int height, const std::vector<uint8_t>& pixels) {
  // Filter 0 rows in stored (uncompressed) deflate blocks: larger than zlib's output, but no zlib needed.
  std::vector<uint8_t> raw;
  raw.reserve(static_cast<size_t>(width + 1) * height);
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), pixels.begin() + static_cast<long>(y) * width, pixels.begin() + static_cast<long>(y + 1) * width);
  }
  std::vector<uint8_t> z = {0x78, 0x01};
  for (size_t off = 0; off < raw.size(); off += 65535) {
    size_t n = std::min<size_t>(65535, raw.size() - off);
    z.push_back(off + n >= raw.size() ? 1 : 0);
    z.push_back(static_cast<uint8_t>(n & 0xFF));
    z.push_back(static_cast<uint8_t>(n >> 8));
    z.push_back(static_cast<uint8_t>(~n & 0xFF));
    z.push_back(static_cast<uint8_t>((~n >> 8) & 0xFF));
    z.insert(z.end(), raw.begin() + static_cast<long>(off), raw.begin() + static_cast<long>(off + n));
  }
  put32(z, adler32(raw.data(), raw.size()));

  std::vector<uint8_t> ihdr;
  put32(ihdr, static_cast<uint32_t>(width));
  put32(ihdr, static_cast<uint32_t>(height));
  ihdr.insert(ihdr.end(), {8, 0, 0, 0, 0});  // 8-bit grayscale, deflate, adaptive filtering, no interlace
  std::vector<uint8_t> png(kPngSignature, kPngSignature + 8);
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", {});
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(png.data()), static_cast<std::streamsize>(png.size()));
  if (!f) throw UserError("cannot write '" + path + "'");
}

std::vector<float> read_raw_f32(const std::string& path, size_t count, const std::string& shape_text) {
  std::vector<uint8_t> file = read_file(path);
  if (file.size() != count * sizeof(float)) {
    throw UserError("input '" + path + "' has " + std::to_string(file.size()) + " bytes; a float32 tensor of shape " + shape_text +
                    " has " + std::to_string(count * sizeof(float)));
  }
  std::vector<float> values(count);
  std::memcpy(values.data(), file.data(), file.size());  // little-endian hosts (x86-64, ARM64), as numpy writes them
  return values;
}

void write_raw_f32(const std::string& path, const float* data, size_t count) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
  if (!f) throw UserError("cannot write '" + path + "'");
}

}  // namespace segexport
