/* The C API of facedb's shim over dlib's face models (src/extract/shim.cpp).
 *
 * Conventions of every entry point that returns `int`:
 *   - 0 (FACEDB_OK) on success; FACEDB_ERR on failure, with a NUL-terminated message written
 *     into `err` (at most `err_len` bytes, truncated). No C++ exception ever crosses this API.
 *   - Images are packed RGB8, row-major, `width * height * 3` bytes; the caller checks the length.
 *   - A handle is used by one thread at a time (dlib's networks keep per-call buffers).
 *
 * Mirrored by the `extern "C"` block of src/extract/dlib.rs: keep the two in step.
 */
#ifndef FACEDB_SHIM_H
#define FACEDB_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FACEDB_OK 0
#define FACEDB_ERR 1

/* Side of the aligned face chip and length of a descriptor. */
#define FACEDB_CHIP_SIZE 150
#define FACEDB_DESCRIPTOR_LEN 128

/* The models of one worker: HOG detector, shape predictor, encoder, optional CNN detector. */
typedef struct facedb_models facedb_models;

/* A detection: dlib's rectangle (right and bottom inclusive) and the detector's score. */
typedef struct facedb_box {
    int64_t left;
    int64_t top;
    int64_t right;
    int64_t bottom;
    double score;
} facedb_box;

/* A new handle holding the HOG detector only; the other models are loaded separately. */
int facedb_models_new(facedb_models** out, char* err, size_t err_len);
/* Frees a handle (NULL is fine). */
void facedb_models_free(facedb_models* models);

/* Deserialize a model file into the handle. */
int facedb_load_landmarks(facedb_models* models, const char* path, char* err, size_t err_len);
int facedb_load_encoder(facedb_models* models, const char* path, char* err, size_t err_len);
int facedb_load_cnn(facedb_models* models, const char* path, char* err, size_t err_len);

/* Face detection, the image upsampled `upsample` times first (pyramid_up); boxes in the input's
 * pixels. On success `*out` is a malloc'd array of `*n_out` boxes (NULL when none), to be freed
 * with facedb_free_boxes. */
int facedb_detect_hog(facedb_models* models, const uint8_t* rgb, uint32_t width, uint32_t height,
                      uint32_t upsample, facedb_box** out, size_t* n_out, char* err, size_t err_len);
int facedb_detect_cnn(facedb_models* models, const uint8_t* rgb, uint32_t width, uint32_t height,
                      uint32_t upsample, facedb_box** out, size_t* n_out, char* err, size_t err_len);
void facedb_free_boxes(facedb_box* boxes);

/* The 5 landmarks of the face in the rectangle, as x0, y0, x1, y1, ... into `out_xy[10]`. */
int facedb_landmarks(facedb_models* models, const uint8_t* rgb, uint32_t width, uint32_t height,
                     int64_t left, int64_t top, int64_t right, int64_t bottom, double* out_xy,
                     char* err, size_t err_len);

/* The aligned chip of the face with the 5 landmarks `xy[10]`, into `out_chip`
 * (FACEDB_CHIP_SIZE² packed RGB). Needs no model. */
int facedb_chip(const uint8_t* rgb, uint32_t width, uint32_t height, const double* xy,
                uint8_t* out_chip, char* err, size_t err_len);

/* The descriptor of a chip (FACEDB_CHIP_SIZE² packed RGB) into `out[FACEDB_DESCRIPTOR_LEN]`. */
int facedb_descriptor(facedb_models* models, const uint8_t* chip, float* out, char* err,
                      size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
