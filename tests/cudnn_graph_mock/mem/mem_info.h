// Stand-in for Jittor's memory information: the GPU's memory.
#pragma once
#include <cstdint>

namespace jittor {
struct MemInfo {
    int64_t total_cuda_ram;
};
extern MemInfo mem_info;
}  // namespace jittor
