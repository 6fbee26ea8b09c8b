// Stand-ins for the few parts of Jittor that cudnn_graph_conv.h uses (see mock_cudnn.cc).
#pragma once
#include <cstdint>
#include <vector>

namespace jittor {
struct Var {
    std::vector<int64_t> shape;
    void* mem_ptr;
};
}  // namespace jittor
