// Products of float rows with int4 or int8 weights, through int8 activations and integer dot
// products (AVX-512 VNNI), as the op torchformers::int8_activation_linear. Built and loaded by
// native.py, which says why it exists.
//
// Each input row is quantized in blocks of 32 features: a block's scale is its largest
// magnitude over 127, and its codes are the features times the inverse of that scale, rounded
// to the nearest integer (ties to even). The output is then
//
//   out[m, n] = sum over blocks b of  d[n, b] * dx[m, b] * dot(w[n, b], qx[m, b])
//                                   + c[n, b] * dx[m, b] * sum(qx[m, b])
//
// where the integer dot products run on unsigned weight codes:
//   - int4: codes in [0, 15], weight = (code - 8) * d + zero, so c = zero - 8 * d;
//   - int8: codes stored offset by 128 (code + 128 in [0, 255]), weight = code * d, so c = -128 * d.
// Weight scales and zero points are bfloat16, one per group of `group_size` input features (a
// multiple of 32); the activation side is float32 throughout.
//
// Weight rows are the checkpoint layout for int4 (two codes per byte, the even input feature in
// the high nibble), and one byte per code for int8. The quantized activations are laid out to
// meet the weight bytes as they load: for int4, each chunk of up to 128 features holds its even
// features' codes, then its odd features' codes.

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace {

constexpr int64_t kBlock = 32;
// Per-row scratch on the stack: rows of up to kMaxBlocks * 32 input features (native.py checks).
constexpr int64_t kMaxBlocks = 1024;
// How far ahead of the row being computed its thread prefetches weights. Decoding streams each
// layer's weights from memory once; without the hint, a 30 MB output layer ran at 1.7-1.9 ms
// against 1.2-1.3 ms with it (2 KB ahead beat 4 KB and 8 KB).
constexpr int64_t kPrefetchBytes = 2048;

inline __mmask16 first_lanes16(int64_t count) {
    return count >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << count) - 1);
}

inline __m512 bfloat16_to_float(__m256i values) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(values), 16));
}

inline float bfloat16_scalar(uint16_t value) {
    uint32_t bits = static_cast<uint32_t>(value) << 16;
    float result;
    std::memcpy(&result, &bits, sizeof result);
    return result;
}

// Quantize rows x (rows, features) into codes (rows, features) in the kernel's order, block
// scales dx and scaled code sums sx (rows, features / 32).
void quantize_rows(const float* x, int64_t rows, int64_t features, bool split_even_odd, int8_t* codes, float* dx,
                   float* sx) {
    const int64_t blocks = features / kBlock;
    for (int64_t m = 0; m < rows; m++) {
        const float* row = x + m * features;
        int8_t* row_codes = codes + m * features;
        for (int64_t b = 0; b < blocks; b++) {
            __m512 low = _mm512_loadu_ps(row + b * kBlock), high = _mm512_loadu_ps(row + b * kBlock + 16);
            float largest = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(low), _mm512_abs_ps(high)));
            float scale = largest / 127.0f;
            __m512 inverse = _mm512_set1_ps(scale > 0.0f ? 1.0f / scale : 0.0f);
            __m512i low_codes = _mm512_cvtps_epi32(_mm512_mul_ps(low, inverse));
            __m512i high_codes = _mm512_cvtps_epi32(_mm512_mul_ps(high, inverse));
            dx[m * blocks + b] = scale;
            sx[m * blocks + b] = scale * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(low_codes, high_codes)));
            int8_t block_codes[kBlock];
            _mm_storeu_si128(reinterpret_cast<__m128i*>(block_codes), _mm512_cvtepi32_epi8(low_codes));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(block_codes + 16), _mm512_cvtepi32_epi8(high_codes));
            if (!split_even_odd) {
                std::memcpy(row_codes + b * kBlock, block_codes, kBlock);
                continue;
            }
            const int64_t chunk = b / 4, place = b % 4;
            const int64_t chunk_features = features - 128 * chunk < 128 ? features - 128 * chunk : 128;
            int8_t* even = row_codes + 128 * chunk + 16 * place;
            int8_t* odd = even + chunk_features / 2;
            for (int j = 0; j < 16; j++) {
                even[j] = block_codes[2 * j];
                odd[j] = block_codes[2 * j + 1];
            }
        }
    }
}

// A weight row's per-block factors: d (float) and c (the code-sum term above).
void row_factors(const uint16_t* scale, const uint16_t* zero, int64_t blocks, int64_t per_group, float* d, float* c) {
    if (per_group == 1) {
        for (int64_t b = 0; b < blocks; b += 16) {
            __mmask16 lanes = first_lanes16(blocks - b);
            __m512 scales = bfloat16_to_float(_mm256_maskz_loadu_epi16(lanes, scale + b));
            __m512 offsets = zero ? _mm512_fnmadd_ps(_mm512_set1_ps(8.0f), scales,
                                                     bfloat16_to_float(_mm256_maskz_loadu_epi16(lanes, zero + b)))
                                  : _mm512_mul_ps(_mm512_set1_ps(-128.0f), scales);
            _mm512_mask_storeu_ps(d + b, lanes, scales);
            _mm512_mask_storeu_ps(c + b, lanes, offsets);
        }
        return;
    }
    for (int64_t b = 0; b < blocks; b++) {
        float s = bfloat16_scalar(scale[b / per_group]);
        d[b] = s;
        c[b] = zero ? bfloat16_scalar(zero[b / per_group]) - 8.0f * s : -128.0f * s;
    }
}

// The dot products of `rows` consecutive weight rows with one activation row, scaled and summed
// into out[0..rows). Each 64-byte load covers 4 blocks (int4: 128 features) or 2 blocks (int8:
// 64 features); lane i of the dot products sums 4 byte products of block i * blocks_per_load / 16.
// Adds to total[a] the lane sums of `count` blocks of one weight row with activation row a
// (`Acts` rows of codes `features` apart, their scales dx `blocks` apart); the weight bytes are
// loaded and unpacked once for them all. Each 64-byte load covers 4 blocks (int4: 128 features)
// or 2 blocks (int8: 64 features); lane i sums 4 byte products of block i * blocks_per_load / 16.
// `Full`: the load spans 64 bytes (only the last, partial one is masked).
template <int Bits, int Acts, bool Full>
inline void add_blocks(__m512* total, const uint8_t* weights, const int8_t* codes, int64_t features, int64_t count,
                       const float* d, const float* dx, int64_t blocks) {
    const __m512i lanes_to_block = Bits == 4 ? _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0)
                                             : _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const int64_t weight_bytes = count * kBlock * Bits / 8;
    const __mmask64 bytes = Full ? ~static_cast<__mmask64>(0) : ((static_cast<__mmask64>(1) << weight_bytes) - 1);
    const __mmask8 present = static_cast<__mmask8>((1u << count) - 1);
    const __m512i loaded = Full ? _mm512_loadu_si512(weights) : _mm512_maskz_loadu_epi8(bytes, weights);
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    const __m512i high = Bits == 4 ? _mm512_and_si512(_mm512_srli_epi16(loaded, 4), nibble) : loaded;
    const __m512i low = Bits == 4 ? _mm512_and_si512(loaded, nibble) : loaded;
    const __m128 weight_scales = Full ? _mm_loadu_ps(d) : _mm_maskz_loadu_ps(present, d);
    for (int a = 0; a < Acts; a++) {
        const int8_t* row = codes + a * features;
        const __m512i first = Full ? _mm512_loadu_si512(row) : _mm512_maskz_loadu_epi8(bytes, row);
        __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), high, first);
        if (Bits == 4) {
            const __m512i second = Full ? _mm512_loadu_si512(row + 64) : _mm512_maskz_loadu_epi8(bytes, row + weight_bytes);
            dot = _mm512_dpbusd_epi32(dot, low, second);
        }
        const float* row_dx = dx + a * blocks;
        const __m128 scales = _mm_mul_ps(weight_scales, Full ? _mm_loadu_ps(row_dx) : _mm_maskz_loadu_ps(present, row_dx));
        const __m512 lane_factors = _mm512_permutexvar_ps(lanes_to_block, _mm512_castps128_ps512(scales));
        total[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), lane_factors, total[a]);
    }
}

// One weight row times `Acts` activation rows (codes `features` apart, dx and sx `blocks` apart):
// the sum above over all blocks, into out[a * out_stride].
template <int Bits, int Acts>
void row_dot(const uint8_t* weights, int64_t features, const int8_t* codes, const float* d, const float* dx,
             const float* c, const float* sx, float* out, int64_t out_stride) {
    const int64_t blocks = features / kBlock;
    constexpr int64_t blocks_per_load = Bits == 4 ? 4 : 2;
    __m512 total[Acts];
    for (int a = 0; a < Acts; a++) total[a] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + blocks_per_load <= blocks; b += blocks_per_load) {
        add_blocks<Bits, Acts, true>(total, weights + b * kBlock * Bits / 8, codes + b * kBlock, features,
                                     blocks_per_load, d + b, dx + b, blocks);
    }
    if (b < blocks) {
        add_blocks<Bits, Acts, false>(total, weights + b * kBlock * Bits / 8, codes + b * kBlock, features, blocks - b,
                                      d + b, dx + b, blocks);
    }
    for (b = 0; b < blocks; b += 16) {
        const __mmask16 lanes = first_lanes16(blocks - b);
        const __m512 offsets = _mm512_maskz_loadu_ps(lanes, c + b);
        for (int a = 0; a < Acts; a++) {
            total[a] = _mm512_fmadd_ps(offsets, _mm512_maskz_loadu_ps(lanes, sx + a * blocks + b), total[a]);
        }
    }
    for (int a = 0; a < Acts; a++) out[a * out_stride] = _mm512_reduce_add_ps(total[a]);
}

template <int Bits>
void linear(const float* x, int64_t rows, int64_t features, const uint8_t* weight, const uint16_t* scale,
            const uint16_t* zero, int64_t out_features, int64_t group_size, float* out) {
    const int64_t blocks = features / kBlock, per_group = group_size / kBlock;
    const int64_t row_bytes = features * Bits / 8, groups = features / group_size;
    const int64_t rows_ahead = (kPrefetchBytes + row_bytes - 1) / row_bytes;
    std::vector<int8_t> codes(rows * features);
    std::vector<float> dx(rows * blocks), sx(rows * blocks);
    quantize_rows(x, rows, features, Bits == 4, codes.data(), dx.data(), sx.data());
    // torch's OpenMP threads (this library links the libgomp.so.1 torch has loaded).
    #pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < out_features; n++) {
        if (n + rows_ahead < out_features) {
            const uint8_t* ahead = weight + (n + rows_ahead) * row_bytes;
            for (int64_t offset = 0; offset < row_bytes; offset += 64) {
                _mm_prefetch(reinterpret_cast<const char*>(ahead + offset), _MM_HINT_T0);
            }
            _mm_prefetch(reinterpret_cast<const char*>(scale + (n + rows_ahead) * groups), _MM_HINT_T0);
            if (zero) _mm_prefetch(reinterpret_cast<const char*>(zero + (n + rows_ahead) * groups), _MM_HINT_T0);
        }
        // d and c side by side: two arrays a page apart would share cache sets.
        alignas(64) float factors[2 * kMaxBlocks];
        float* d = factors;
        float* c = factors + blocks;
        row_factors(scale + n * groups, zero ? zero + n * groups : nullptr, blocks, per_group, d, c);
        // Four activation rows at a time share each load and unpacking of the weight row (prompts).
        int64_t m = 0;
        for (; m + 4 <= rows; m += 4) {
            row_dot<Bits, 4>(weight + n * row_bytes, features, codes.data() + m * features, d, dx.data() + m * blocks,
                             c, sx.data() + m * blocks, out + m * out_features + n, out_features);
        }
        for (; m < rows; m++) {
            row_dot<Bits, 1>(weight + n * row_bytes, features, codes.data() + m * features, d, dx.data() + m * blocks,
                             c, sx.data() + m * blocks, out + m * out_features + n, out_features);
        }
    }
}

at::Tensor int8_activation_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                                  const std::optional<at::Tensor>& zero, int64_t group_size) {
    const int64_t features = x.size(-1), out_features = weight.size(0);
    TORCH_CHECK(features % kBlock == 0 && features <= kMaxBlocks * kBlock && group_size % kBlock == 0 &&
                    features % group_size == 0,
                "int8_activation_linear: input features and group size must be multiples of 32 (got ", features,
                " and ", group_size, ")");
    TORCH_CHECK(weight.scalar_type() == at::kByte && weight.is_contiguous() && scale.is_contiguous() &&
                    scale.scalar_type() == at::kBFloat16 && scale.size(0) == out_features &&
                    scale.size(1) == features / group_size,
                "int8_activation_linear: weight must be contiguous uint8 rows and scale contiguous bfloat16 "
                "(out_features, groups)");
    const int bits = zero.has_value() ? 4 : 8;
    TORCH_CHECK(weight.size(1) == features * bits / 8, "int8_activation_linear: weight has ", weight.size(1),
                " bytes per row where ", features, " int", bits, " codes take ", features * bits / 8);
    if (zero.has_value()) {
        TORCH_CHECK(zero->is_contiguous() && zero->scalar_type() == at::kBFloat16 && zero->sizes() == scale.sizes(),
                    "int8_activation_linear: zero must be contiguous bfloat16 shaped like scale");
    }
    at::Tensor rows = x.reshape({-1, features}).to(at::kFloat).contiguous();
    at::Tensor out = at::empty({rows.size(0), out_features}, rows.options());
    const auto* scale_data = reinterpret_cast<const uint16_t*>(scale.data_ptr());
    const auto* zero_data = zero.has_value() ? reinterpret_cast<const uint16_t*>(zero->data_ptr()) : nullptr;
    if (bits == 4) {
        linear<4>(rows.data_ptr<float>(), rows.size(0), features, weight.data_ptr<uint8_t>(), scale_data, zero_data,
                  out_features, group_size, out.data_ptr<float>());
    } else {
        linear<8>(rows.data_ptr<float>(), rows.size(0), features, weight.data_ptr<uint8_t>(), scale_data, nullptr,
                  out_features, group_size, out.data_ptr<float>());
    }
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out_features;
    return out.to(x.scalar_type()).reshape(shape);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(torchformers, m) {
    m.def("int8_activation_linear(Tensor x, Tensor weight, Tensor scale, Tensor? zero, int group_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(torchformers, CPU, m) {
    m.impl("int8_activation_linear", &int8_activation_linear);
}
