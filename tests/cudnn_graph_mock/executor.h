// Stand-in for Jittor's executor: a temporary allocator that counts what is not given back.
#pragma once
#include <cstddef>
#include <cstdlib>

namespace jittor {
struct TempAllocator {
    int outstanding = 0;
    void* alloc(size_t size, size_t& allocation) {
        outstanding++;
        allocation = size;
        return aligned_alloc(256, (size + 255) / 256 * 256);
    }
    void free(void* data, size_t size, const size_t& allocation) {
        outstanding--;
        if (size != allocation) abort();
        std::free(data);
    }
};
struct Executor {
    TempAllocator* temp_allocator;
};
extern Executor exe;
}  // namespace jittor
