// Float32 products of a few rows (a batch's decode step) with a weight packed for them, as the
// ops torchformers::pack_rows_weight and torchformers::packed_rows_linear. Built and loaded by
// rows_product.py, which says why they exist.
//
// The packed layout cuts the weight's output features into groups of kGroup (48) and stores each
// group input-feature-major: packed[g, k, j] = weight[48 g + j, k], the last group padded with
// zeros. A step then reads each group as one contiguous run: for every input feature k it loads
// the group's three vectors of 16 weights and, for each row m, adds x[m, k] times them to three
// accumulators. Eight rows keep 24 accumulators in registers; more rows go through in chunks of
// eight while the group's weights are still in the core's cache.

#include <immintrin.h>

#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace {

constexpr int kVectors = 3;
constexpr int64_t kGroup = 16 * kVectors;
constexpr int kMaxRows = 8;  // rows whose accumulators fit in the 32 vector registers

inline __mmask16 first_lanes16(int64_t count) {
    return count >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << count) - 1);
}

// out[m, 48 g + j] = bias[48 g + j] + sum over k of x[m, k] * packed[g, k, j], for Rows rows of x.
template <int Rows>
void group_product(const float* x, int64_t features, const float* group, const float* bias, int64_t out_features,
                   int64_t first_out, float* out) {
    __m512 acc[Rows][kVectors];
    for (int j = 0; j < kVectors; j++) {
        const int64_t n = first_out + 16 * j;
        const __m512 start = bias && n < out_features
                                 ? _mm512_maskz_loadu_ps(first_lanes16(out_features - n), bias + n)
                                 : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int m = 0; m < Rows; m++) acc[m][j] = start;
    }
    for (int64_t k = 0; k < features; k++) {
        const float* weights = group + k * kGroup;
        const __m512 w0 = _mm512_loadu_ps(weights);
        const __m512 w1 = _mm512_loadu_ps(weights + 16);
        const __m512 w2 = _mm512_loadu_ps(weights + 32);
#pragma GCC unroll 8
        for (int m = 0; m < Rows; m++) {
            const __m512 value = _mm512_set1_ps(x[m * features + k]);
            acc[m][0] = _mm512_fmadd_ps(value, w0, acc[m][0]);
            acc[m][1] = _mm512_fmadd_ps(value, w1, acc[m][1]);
            acc[m][2] = _mm512_fmadd_ps(value, w2, acc[m][2]);
        }
    }
    for (int j = 0; j < kVectors; j++) {
        const int64_t n = first_out + 16 * j;
        if (n >= out_features) break;
        const __mmask16 lanes = first_lanes16(out_features - n);
#pragma GCC unroll 8
        for (int m = 0; m < Rows; m++) _mm512_mask_storeu_ps(out + m * out_features + n, lanes, acc[m][j]);
    }
}

void rows_chunk(int64_t rows, const float* x, int64_t features, const float* group, const float* bias,
                int64_t out_features, int64_t first_out, float* out) {
    switch (rows) {
        case 1: return group_product<1>(x, features, group, bias, out_features, first_out, out);
        case 2: return group_product<2>(x, features, group, bias, out_features, first_out, out);
        case 3: return group_product<3>(x, features, group, bias, out_features, first_out, out);
        case 4: return group_product<4>(x, features, group, bias, out_features, first_out, out);
        case 5: return group_product<5>(x, features, group, bias, out_features, first_out, out);
        case 6: return group_product<6>(x, features, group, bias, out_features, first_out, out);
        case 7: return group_product<7>(x, features, group, bias, out_features, first_out, out);
        default: return group_product<8>(x, features, group, bias, out_features, first_out, out);
    }
}

// The weights, stacked along their output features, in the packed layout.
at::Tensor pack_rows_weight(at::TensorList weights) {
    TORCH_CHECK(!weights.empty(), "pack_rows_weight: no weights given");
    const int64_t features = weights[0].size(-1);
    std::vector<const float*> rows;  // the first input feature of each output feature
    std::vector<int64_t> feature_strides;
    for (const at::Tensor& weight : weights) {
        TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.device().is_cpu() &&
                        weight.size(1) == features,
                    "pack_rows_weight: weights must be 2-D float32 CPU tensors (out_features, ", features, ")");
        for (int64_t n = 0; n < weight.size(0); n++) {
            rows.push_back(weight.data_ptr<float>() + n * weight.stride(0));
            feature_strides.push_back(weight.stride(1));
        }
    }
    const int64_t out_features = static_cast<int64_t>(rows.size());
    const int64_t groups = (out_features + kGroup - 1) / kGroup;
    at::Tensor packed = at::empty({groups, features, kGroup}, weights[0].options());
    float* target = packed.data_ptr<float>();
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
        for (int64_t g = begin; g < end; g++) {
            float* group = target + g * features * kGroup;
            for (int64_t j = 0; j < kGroup; j++) {
                const int64_t n = g * kGroup + j;
                if (n < out_features) {
                    const float* row = rows[n];
                    const int64_t stride = feature_strides[n];
                    for (int64_t k = 0; k < features; k++) group[k * kGroup + j] = row[k * stride];
                } else {
                    for (int64_t k = 0; k < features; k++) group[k * kGroup + j] = 0.0f;
                }
            }
        }
    });
    return packed;
}

at::Tensor packed_rows_linear(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                              const std::optional<at::Tensor>& bias) {
    const int64_t features = x.size(-1);
    TORCH_CHECK(x.scalar_type() == at::kFloat && packed.scalar_type() == at::kFloat && packed.is_contiguous() &&
                    packed.dim() == 3 && packed.size(1) == features && packed.size(2) == kGroup &&
                    packed.size(0) * kGroup >= out_features && packed.size(0) * kGroup < out_features + kGroup,
                "packed_rows_linear: packed must come from pack_rows_weight on a float32 weight with ", features,
                " input and ", out_features, " output features");
    if (bias.has_value()) {
        TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->numel() == out_features,
                    "packed_rows_linear: bias must be contiguous float32 with ", out_features, " values");
    }
    const at::Tensor rows = x.reshape({-1, features}).contiguous();
    const int64_t count = rows.size(0), groups = packed.size(0);
    at::Tensor out = at::empty({count, out_features}, rows.options());
    const float* x_data = rows.data_ptr<float>();
    const float* packed_data = packed.data_ptr<float>();
    const float* bias_data = bias.has_value() ? bias->data_ptr<float>() : nullptr;
    float* out_data = out.data_ptr<float>();
    // Each thread takes one contiguous run of groups, so it streams its share of the weight in order.
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
        for (int64_t g = begin; g < end; g++) {
            const float* group = packed_data + g * features * kGroup;
            for (int64_t m = 0; m < count; m += kMaxRows) {
                const int64_t chunk = count - m < kMaxRows ? count - m : kMaxRows;
                rows_chunk(chunk, x_data + m * features, features, group, bias_data, out_features, g * kGroup,
                           out_data + m * out_features);
            }
        }
    });
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out_features;
    return out.view(shape);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(torchformers, m) {
    m.def("pack_rows_weight(Tensor[] weights) -> Tensor");
    m.def("packed_rows_linear(Tensor x, Tensor packed, int out_features, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(torchformers, CPU, m) {
    m.impl("pack_rows_weight", &pack_rows_weight);
    m.impl("packed_rows_linear", &packed_rows_linear);
}
