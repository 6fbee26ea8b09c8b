// Stand-in for Jittor's cudnn_wrapper.h: cuDNN's real header, the handle, the workspace limit,
// and Jittor's checks, which throw as Jittor's do.
#pragma once
#include <cuda_runtime.h>
#include <cudnn.h>
#include <iostream>
#include <stdexcept>

namespace jittor {
extern cudnnHandle_t cudnn_handle;
extern float max_workspace_ratio;

struct Failure {
    ~Failure() noexcept(false) {
        std::cerr << std::endl;
        throw std::runtime_error("assertion failed");
    }
    template <class T> Failure& operator<<(const T& value) {
        std::cerr << value << " ";
        return *this;
    }
};
#define ASSERT(condition) if (!(condition)) jittor::Failure() << #condition

template <class T> inline void check_status(T status, const char* call) {
    if (static_cast<int>(status) != 0) throw std::runtime_error(call);
}
#define checkCudaErrors(call) jittor::check_status((call), #call)
}  // namespace jittor
