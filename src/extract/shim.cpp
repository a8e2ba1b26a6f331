// facedb's shim over dlib's face models: the C API of shim.h, compiled by build.rs against
// Debian's libdlib-dev.
//
// Every entry point is noexcept and catches everything: errors cross as a code and a message.
// Inputs that would reach a DLIB_CASSERT (wrong chip size, empty rectangles, degenerate
// landmarks) are rejected here first, see the note on DLIB_NO_ABORT_ON_2ND_FATAL_ERROR.

// dlib aborts the process on the *second* dlib::fatal_error (a failed DLIB_CASSERT) on the
// theory that the first one was ignored. A server reports the first and carries on, so turn that
// off for the code instantiated in this file (dlib's inline header code). Code compiled into
// libdlib.so (e.g. the CPU convolutions) still aborts on a second one: hence the checks here.
#define DLIB_NO_ABORT_ON_2ND_FATAL_ERROR

#include "shim.h"

#include <dlib/dnn.h>
#include <dlib/image_processing.h>
#include <dlib/image_processing/frontal_face_detector.h>
#include <dlib/image_transforms.h>
#include <dlib/matrix.h>

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

using namespace dlib;

namespace {

// The networks below must be exactly those the .dat files were trained with: deserialize checks
// the layer structure. They are the ones of dlib's dnn_face_recognition_ex.cpp and
// dnn_mmod_face_detection_ex.cpp.

// --- The face recognition ResNet (dlib_face_recognition_resnet_model_v1.dat). ---
template <template <int, template <typename> class, int, typename> class Block, int N,
          template <typename> class BN, typename Subnet>
using residual = add_prev1<Block<N, BN, 1, tag1<Subnet>>>;

template <template <int, template <typename> class, int, typename> class Block, int N,
          template <typename> class BN, typename Subnet>
using residual_down = add_prev2<avg_pool<2, 2, 2, 2, skip1<tag2<Block<N, BN, 2, tag1<Subnet>>>>>>;

template <int N, template <typename> class BN, int Stride, typename Subnet>
using conv_block = BN<con<N, 3, 3, 1, 1, relu<BN<con<N, 3, 3, Stride, Stride, Subnet>>>>>;

template <int N, typename Subnet> using ares = relu<residual<conv_block, N, affine, Subnet>>;
template <int N, typename Subnet> using ares_down = relu<residual_down<conv_block, N, affine, Subnet>>;

template <typename Subnet> using alevel0 = ares_down<256, Subnet>;
template <typename Subnet> using alevel1 = ares<256, ares<256, ares_down<256, Subnet>>>;
template <typename Subnet> using alevel2 = ares<128, ares<128, ares_down<128, Subnet>>>;
template <typename Subnet> using alevel3 = ares<64, ares<64, ares<64, ares_down<64, Subnet>>>>;
template <typename Subnet> using alevel4 = ares<32, ares<32, ares<32, Subnet>>>;

using encoder_net = loss_metric<fc_no_bias<
    128, avg_pool_everything<alevel0<alevel1<alevel2<alevel3<alevel4<max_pool<
             3, 3, 2, 2, relu<affine<con<32, 7, 7, 2, 2, input_rgb_image_sized<FACEDB_CHIP_SIZE>>>>>>>>>>>>>;

// --- The MMOD CNN face detector (mmod_human_face_detector.dat). ---
template <long Filters, typename Subnet> using con5d = con<Filters, 5, 5, 2, 2, Subnet>;
template <long Filters, typename Subnet> using con5 = con<Filters, 5, 5, 1, 1, Subnet>;
template <typename Subnet>
using downsampler = relu<affine<con5d<32, relu<affine<con5d<32, relu<affine<con5d<16, Subnet>>>>>>>>>;
template <typename Subnet> using rcon5 = relu<affine<con5<45, Subnet>>>;

using cnn_net = loss_mmod<con<1, 9, 9, 1, 1, rcon5<rcon5<rcon5<downsampler<input_rgb_image_pyramid<pyramid_down<6>>>>>>>>;

// Upsampling doubles each side; past this many pixels (~800 MB of RGB alone) refuse rather than
// let the allocation take the machine down (Linux overcommit means no bad_alloc to catch).
constexpr double kMaxWorkPixels = double(1u << 28);
constexpr uint32_t kMaxUpsample = 8;
// Coordinates beyond this are nonsense for any photo; refusing them keeps dlib's double-to-long
// conversions defined.
constexpr double kMaxCoord = double(1u << 30);
// Images the CNN runs on are at least this big on both sides (see facedb_detect_cnn).
constexpr long kMinCnnSide = 32;

struct error_message {
    std::string text;
};

[[noreturn]] void fail(std::string text) { throw error_message{std::move(text)}; }

void write_err(char* err, size_t err_len, const char* msg) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", msg);
}

// Runs `body`, turning any exception into FACEDB_ERR and a message.
template <typename F>
int guarded(char* err, size_t err_len, F&& body) noexcept {
    try {
        body();
        return FACEDB_OK;
    } catch (const error_message& e) {
        write_err(err, err_len, e.text.c_str());
    } catch (const std::bad_alloc&) {
        write_err(err, err_len, "out of memory");
    } catch (const std::exception& e) {
        // dlib::error and its kin (serialization_error, fatal_error) are std::exceptions.
        write_err(err, err_len, e.what());
    } catch (...) {
        write_err(err, err_len, "unknown C++ exception");
    }
    return FACEDB_ERR;
}

matrix<rgb_pixel> to_matrix(const uint8_t* rgb, uint32_t width, uint32_t height) {
    static_assert(sizeof(rgb_pixel) == 3, "rgb_pixel must be packed RGB");
    matrix<rgb_pixel> img;
    if (width == 0 || height == 0) return img;
    if (rgb == nullptr) fail("null image buffer");
    img.set_size(long(height), long(width));
    std::memcpy(image_data(img), rgb, size_t(width) * size_t(height) * 3);
    return img;
}

void check_upsample(uint32_t width, uint32_t height, uint32_t upsample) {
    if (upsample > kMaxUpsample)
        fail("upsample " + std::to_string(upsample) + " is more than " + std::to_string(kMaxUpsample));
    const double pixels = double(width) * double(height) * std::ldexp(1.0, 2 * int(upsample));
    if (pixels > kMaxWorkPixels)
        fail("image " + std::to_string(width) + "x" + std::to_string(height) + " upsampled " +
             std::to_string(upsample) + " times is too large");
}

rectangle to_rect(const drectangle& r) {
    // drectangle's conversion to rectangle rounds each corner.
    return rectangle(r);
}

void copy_boxes(const std::vector<facedb_box>& boxes, facedb_box** out, size_t* n_out) {
    *out = nullptr;
    *n_out = 0;
    if (boxes.empty()) return;
    auto* mem = static_cast<facedb_box*>(std::malloc(boxes.size() * sizeof(facedb_box)));
    if (mem == nullptr) throw std::bad_alloc();
    std::memcpy(mem, boxes.data(), boxes.size() * sizeof(facedb_box));
    *out = mem;
    *n_out = boxes.size();
}

facedb_box make_box(const rectangle& r, double score) {
    return facedb_box{r.left(), r.top(), r.right(), r.bottom(), score};
}

}  // namespace

struct facedb_models {
    frontal_face_detector hog = get_frontal_face_detector();
    shape_predictor landmarks;
    bool has_landmarks = false;
    encoder_net encoder;
    bool has_encoder = false;
    // Big (its tensors are sized on first use), so only when asked for.
    std::unique_ptr<cnn_net> cnn;
    // The smallest side of the CNN's detector windows (80 for mmod_human_face_detector.dat).
    long cnn_min_side = 0;
};

extern "C" {

// Every extraction worker owns its models and runs on its own thread: OpenBLAS's threads on top
// of them would only fight over the same cores. Looked up at run time, so another BLAS (which
// has no such call) works too.
static void single_threaded_blas() {
    using set_threads = void (*)(int);
    static const bool done = [] {
        if (auto set = reinterpret_cast<set_threads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
        return true;
    }();
    (void)done;
}

int facedb_models_new(facedb_models** out, char* err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (out == nullptr) fail("null output pointer");
        single_threaded_blas();
        *out = nullptr;
        *out = new facedb_models();
    });
}

void facedb_models_free(facedb_models* models) { delete models; }

int facedb_load_landmarks(facedb_models* models, const char* path, char* err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (models == nullptr || path == nullptr) fail("null argument");
        models->has_landmarks = false;
        deserialize(path) >> models->landmarks;
        if (models->landmarks.num_parts() != 5)
            fail("expected a 5-point shape predictor, this one has " +
                 std::to_string(models->landmarks.num_parts()) + " parts");
        models->has_landmarks = true;
    });
}

int facedb_load_encoder(facedb_models* models, const char* path, char* err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (models == nullptr || path == nullptr) fail("null argument");
        models->has_encoder = false;
        deserialize(path) >> models->encoder;
        models->has_encoder = true;
    });
}

int facedb_load_cnn(facedb_models* models, const char* path, char* err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (models == nullptr || path == nullptr) fail("null argument");
        models->cnn.reset();
        auto net = std::unique_ptr<cnn_net>(new cnn_net());
        deserialize(path) >> *net;
        long min_side = 0;
        for (const auto& w : net->loss_details().get_options().detector_windows) {
            const long side = long(std::min(w.width, w.height));
            if (min_side == 0 || side < min_side) min_side = side;
        }
        if (min_side == 0) fail("the CNN detector has no detector windows");
        models->cnn_min_side = std::max(min_side, kMinCnnSide);
        models->cnn = std::move(net);
    });
}

// Detections (HOG's rect_detection or the CNN's mmod_rect) in an image upsampled `upsample`
// times, as boxes of the caller's image. pyramid_up uses pyramid_down<2>, whose rect_down maps
// back by the same factor.
// (Inside the file's extern "C" block: a template needs C++ linkage.)
extern "C++" {
template <typename Detection>
void return_boxes(const std::vector<Detection>& dets, uint32_t upsample, facedb_box** out, size_t* n_out) {
    std::vector<facedb_box> boxes;
    boxes.reserve(dets.size());
    pyramid_down<2> pyr;
    for (const auto& d : dets)
        boxes.push_back(make_box(to_rect(pyr.rect_down(drectangle(d.rect), upsample)), d.detection_confidence));
    copy_boxes(boxes, out, n_out);
}
}

int facedb_detect_hog(facedb_models* models, const uint8_t* rgb, uint32_t width, uint32_t height,
                      uint32_t upsample, facedb_box** out, size_t* n_out, char* err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (models == nullptr || out == nullptr || n_out == nullptr) fail("null argument");
        *out = nullptr;
        *n_out = 0;
        check_upsample(width, height, upsample);
        if (width == 0 || height == 0) return;
        matrix<rgb_pixel> img = to_matrix(rgb, width, height);
        for (uint32_t i = 0; i < upsample; ++i) pyramid_up(img);
        std::vector<rect_detection> dets;
        // adjust_threshold 0: the detector's own threshold; scores come back > 0.
        models->hog(img, dets, 0.0);
        return_boxes(dets, upsample, out, n_out);
    });
}

int facedb_detect_cnn(facedb_models* models, const uint8_t* rgb, uint32_t width, uint32_t height,
                      uint32_t upsample, facedb_box** out, size_t* n_out, char* err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (models == nullptr || out == nullptr || n_out == nullptr) fail("null argument");
        *out = nullptr;
        *n_out = 0;
        if (!models->cnn) fail("the CNN face detector is not loaded");
        check_upsample(width, height, upsample);
        if (width == 0 || height == 0) return;
        matrix<rgb_pixel> img = to_matrix(rgb, width, height);
        for (uint32_t i = 0; i < upsample; ++i) pyramid_up(img);
        // No window fits in a smaller image, so there is nothing to find; and dlib's tiled input
        // pyramid writes out of bounds for images under 10 pixels wide (heap corruption, seen
        // with valgrind), while under ~29 pixels its convolutions fail a DLIB_CASSERT.
        if (img.nr() < models->cnn_min_side || img.nc() < models->cnn_min_side) return;
        return_boxes((*models->cnn)(img), upsample, out, n_out);
    });
}

void facedb_free_boxes(facedb_box* boxes) { std::free(boxes); }

int facedb_landmarks(facedb_models* models, const uint8_t* rgb, uint32_t width, uint32_t height,
                     int64_t left, int64_t top, int64_t right, int64_t bottom, double* out_xy,
                     char* err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (models == nullptr || out_xy == nullptr) fail("null argument");
        if (!models->has_landmarks) fail("the shape predictor is not loaded");
        if (width == 0 || height == 0) fail("empty image");
        const double lim = kMaxCoord;
        if (std::fabs(double(left)) > lim || std::fabs(double(top)) > lim || std::fabs(double(right)) > lim ||
            std::fabs(double(bottom)) > lim)
            fail("rectangle out of range");
        const rectangle rect{long(left), long(top), long(right), long(bottom)};
        if (rect.is_empty()) fail("empty rectangle");
        matrix<rgb_pixel> img = to_matrix(rgb, width, height);
        const full_object_detection shape = models->landmarks(img, rect);
        if (shape.num_parts() != 5) fail("the shape predictor gave " + std::to_string(shape.num_parts()) + " parts");
        for (unsigned long i = 0; i < 5; ++i) {
            out_xy[2 * i] = double(shape.part(i).x());
            out_xy[2 * i + 1] = double(shape.part(i).y());
        }
    });
}

int facedb_chip(const uint8_t* rgb, uint32_t width, uint32_t height, const double* xy,
                uint8_t* out_chip, char* err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (xy == nullptr || out_chip == nullptr) fail("null argument");
        if (width == 0 || height == 0) fail("empty image");
        std::vector<point> parts;
        for (int i = 0; i < 5; ++i) {
            const double x = xy[2 * i], y = xy[2 * i + 1];
            if (!std::isfinite(x) || !std::isfinite(y) || std::fabs(x) > kMaxCoord || std::fabs(y) > kMaxCoord)
                fail("landmark out of range");
            parts.push_back(point(std::lround(x), std::lround(y)));
        }
        const full_object_detection shape(rectangle(), parts);
        const chip_details details = get_face_chip_details(shape, FACEDB_CHIP_SIZE, 0.25);
        // Coincident landmarks give a zero-size (or NaN) source rectangle: no face to align.
        const drectangle& r = details.rect;
        if (!std::isfinite(r.left()) || !std::isfinite(r.top()) || !std::isfinite(r.right()) ||
            !std::isfinite(r.bottom()) || !std::isfinite(details.angle) || r.right() - r.left() < 1 ||
            r.bottom() - r.top() < 1)
            fail("degenerate landmarks");
        matrix<rgb_pixel> img = to_matrix(rgb, width, height);
        matrix<rgb_pixel> chip;
        extract_image_chip(img, details, chip);
        if (chip.nr() != FACEDB_CHIP_SIZE || chip.nc() != FACEDB_CHIP_SIZE) fail("unexpected chip size");
        std::memcpy(out_chip, image_data(chip), size_t(FACEDB_CHIP_SIZE) * FACEDB_CHIP_SIZE * 3);
    });
}

int facedb_descriptor(facedb_models* models, const uint8_t* chip, float* out, char* err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (models == nullptr || chip == nullptr || out == nullptr) fail("null argument");
        if (!models->has_encoder) fail("the encoder is not loaded");
        const matrix<rgb_pixel> img = to_matrix(chip, FACEDB_CHIP_SIZE, FACEDB_CHIP_SIZE);
        const matrix<float, 0, 1> d = models->encoder(img);
        if (d.size() != FACEDB_DESCRIPTOR_LEN)
            fail("the encoder gave " + std::to_string(d.size()) + " components");
        for (long i = 0; i < FACEDB_DESCRIPTOR_LEN; ++i) out[i] = d(i);
    });
}

}  // extern "C"
