// cudnn_graph_conv.h against a mock of the cuDNN functions it calls, on a machine without a GPU.
// The mock checks what cuDNN's documentation asks of each call (every attribute a descriptor
// needs, with its element count, before it is finalized; only live, finalized descriptors as
// attributes; no use of a destroyed descriptor), and plays engines with chosen notes, workspace,
// failures and times. The scenarios check the choice of engine, the plan cache, the workspace
// limit, the fallback heuristics and the failure when nothing runs. Built and run by
// tests/test_backend.py where cuDNN's headers are installed.
#include <cassert>
#include <cstdio>
#include <map>
#include <set>

#include "cudnn_graph_conv.h"

using namespace jittor;

namespace jittor {
TempAllocator temp_allocator;
Executor exe{&temp_allocator};
MemInfo mem_info{int64_t(1) << 30};
cudnnHandle_t cudnn_handle = reinterpret_cast<cudnnHandle_t>(0x1234);
float max_workspace_ratio = 0.25;
}  // namespace jittor

// An engine configuration the mock heuristics offer.
struct Engine {
    bool down_converts, reduces_in_half, tensor_cores, builds;
    int64_t workspace;
    bool runs;
    float ms;
};
std::vector<Engine> instant_engines, fallback_engines;

struct Descriptor {
    cudnnBackendDescriptorType_t type;
    bool finalized = false;
    std::map<int, int64_t> counts;  // attribute -> element count set
    std::vector<Descriptor*> parts;  // the descriptors set as attributes
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_INSTANT;
    int engine = -1;
    void* workspace = nullptr;
};
std::set<Descriptor*> live;
int heuristics = 0, executions = 0, last_engine = -1;
float elapsed = 0;

void fail(const char* what) {
    fprintf(stderr, "cuDNN misused: %s\n", what);
    abort();
}

Descriptor* known(cudnnBackendDescriptor_t handle) {
    auto descriptor = reinterpret_cast<Descriptor*>(handle);
    if (!live.count(descriptor)) fail("a destroyed or unknown descriptor");
    return descriptor;
}

Engine& engine_of(const Descriptor* descriptor) {
    auto& engines = descriptor->mode == CUDNN_HEUR_MODE_FALLBACK ? fallback_engines : instant_engines;
    return engines.at(descriptor->engine);
}

// What each descriptor needs before it is finalized: (attribute, element count).
const std::map<int, std::vector<std::pair<int, int>>> required = {
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR,
     {{CUDNN_ATTR_TENSOR_DATA_TYPE, 1}, {CUDNN_ATTR_TENSOR_DIMENSIONS, 4}, {CUDNN_ATTR_TENSOR_STRIDES, 4},
      {CUDNN_ATTR_TENSOR_UNIQUE_ID, 1}, {CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, 1}}},
    {CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR,
     {{CUDNN_ATTR_CONVOLUTION_COMP_TYPE, 1}, {CUDNN_ATTR_CONVOLUTION_CONV_MODE, 1},
      {CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, 1}, {CUDNN_ATTR_CONVOLUTION_DILATIONS, 2},
      {CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, 2}, {CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, 2},
      {CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, 2}}},
    {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
     {{CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, 1}, {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, 1},
      {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, 1}, {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, 1},
      {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, 1}, {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, 1}}},
    {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
     {{CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, 1}, {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, 1},
      {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, 1}, {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, 1},
      {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, 1}, {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, 1}}},
    {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
     {{CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, 1}, {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, 1},
      {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, 1}, {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, 1},
      {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, 1}, {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, 1}}},
    {CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR,
     {{CUDNN_ATTR_OPERATIONGRAPH_OPS, 1}, {CUDNN_ATTR_OPERATIONGRAPH_HANDLE, 1}}},
    {CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR,
     {{CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, 1}, {CUDNN_ATTR_ENGINEHEUR_MODE, 1}}},
    {CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR,
     {{CUDNN_ATTR_EXECUTION_PLAN_HANDLE, 1}, {CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, 1}}},
    {CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR,
     {{CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, 3}, {CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, 3},
      {CUDNN_ATTR_VARIANT_PACK_WORKSPACE, 1}}},
};

extern "C" {
cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t* handle) {
    auto descriptor = new Descriptor{type};
    live.insert(descriptor);
    *handle = reinterpret_cast<cudnnBackendDescriptor_t>(descriptor);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t handle) {
    Descriptor* descriptor = known(handle);
    live.erase(descriptor);
    delete descriptor;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t handle, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count, const void* values) {
    Descriptor* descriptor = known(handle);
    if (descriptor->finalized) fail("an attribute set after finalizing");
    if (type == CUDNN_TYPE_HANDLE && *static_cast<const cudnnHandle_t*>(values) != cudnn_handle) fail("another handle");
    if (type == CUDNN_TYPE_BACKEND_DESCRIPTOR) {
        for (int64_t i = 0; i < count; i++) {
            Descriptor* part = known(static_cast<const cudnnBackendDescriptor_t*>(values)[i]);
            if (!part->finalized) fail("an unfinalized descriptor as an attribute");
            descriptor->parts.push_back(part);
            descriptor->engine = part->engine;
            descriptor->mode = part->mode;
        }
    }
    if (name == CUDNN_ATTR_ENGINEHEUR_MODE) descriptor->mode = *static_cast<const cudnnBackendHeurMode_t*>(values);
    if (name == CUDNN_ATTR_VARIANT_PACK_WORKSPACE) descriptor->workspace = *static_cast<void* const*>(values);
    descriptor->counts[name] = count;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t handle) {
    Descriptor* descriptor = known(handle);
    for (auto [name, count] : required.at(descriptor->type)) {
        if (!descriptor->counts.count(name) || descriptor->counts[name] != count) fail("an attribute missing");
    }
    if (descriptor->type == CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR) heuristics++;
    if (descriptor->type == CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR && !engine_of(descriptor).builds)
        return CUDNN_STATUS_NOT_SUPPORTED;
    descriptor->finalized = true;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const handle, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t, int64_t requested, int64_t* count, void* values) {
    Descriptor* descriptor = known(handle);
    if (!descriptor->finalized) fail("an attribute read before finalizing");
    if (name == CUDNN_ATTR_ENGINEHEUR_RESULTS) {
        auto& engines = descriptor->mode == CUDNN_HEUR_MODE_FALLBACK ? fallback_engines : instant_engines;
        *count = requested ? std::min<int64_t>(requested, engines.size()) : engines.size();
        for (int64_t i = 0; requested && i < *count; i++) {
            Descriptor* config = known(static_cast<cudnnBackendDescriptor_t*>(values)[i]);
            if (config->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR) fail("not an engine configuration");
            *config = Descriptor{CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, true, {}, {}, descriptor->mode, int(i)};
        }
    } else if (name == CUDNN_ATTR_ENGINECFG_ENGINE) {
        Descriptor* engine = known(*static_cast<cudnnBackendDescriptor_t*>(values));
        if (engine->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR) fail("not an engine");
        *engine = Descriptor{CUDNN_BACKEND_ENGINE_DESCRIPTOR, true, {}, {}, descriptor->mode, descriptor->engine};
        *count = 1;
    } else if (name == CUDNN_ATTR_ENGINE_NUMERICAL_NOTE) {
        auto notes = static_cast<cudnnBackendNumericalNote_t*>(values);
        const Engine& engine = engine_of(descriptor);
        *count = 0;
        if (engine.down_converts) notes[(*count)++] = CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS;
        if (engine.reduces_in_half) notes[(*count)++] = CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION;
        if (engine.tensor_cores) notes[(*count)++] = CUDNN_NUMERICAL_NOTE_TENSOR_CORE;
        if (*count > requested) fail("more notes than room");
    } else if (name == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE) {
        *static_cast<int64_t*>(values) = engine_of(descriptor).workspace;
        *count = 1;
    } else {
        fail("an attribute the mock does not know");
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t handle, cudnnBackendDescriptor_t plan_handle,
                                  cudnnBackendDescriptor_t pack_handle) {
    Descriptor* plan = known(plan_handle);
    Descriptor* pack = known(pack_handle);
    if (handle != cudnn_handle || !plan->finalized || !pack->finalized) fail("an unfinished plan or pack");
    if (engine_of(plan).workspace && !pack->workspace) fail("no workspace");
    for (Descriptor* part : plan->parts) known(part);
    executions++;
    last_engine = plan->engine;
    if (!engine_of(plan).runs) return CUDNN_STATUS_EXECUTION_FAILED;
    elapsed += engine_of(plan).ms;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetStream(cudnnHandle_t, cudaStream_t* stream) {
    *stream = nullptr;
    return CUDNN_STATUS_SUCCESS;
}

// Events time what runs between a start (odd number) and a stop (even number).
cudaError_t cudaEventCreate(cudaEvent_t* event) {
    static intptr_t created = 0;
    *event = reinterpret_cast<cudaEvent_t>(++created);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
    if (reinterpret_cast<intptr_t>(event) % 2) elapsed = 0;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
    *ms = elapsed;
    return cudaSuccess;
}
}

float buffer[1 << 16] __attribute__((aligned(256)));

// One float32 convolution of a 1x3xSxS input with a 2x3x3x3 filter; `offset` shifts the input's address.
void convolve(cudnnBackendDescriptorType_t operation, int64_t size, int offset = 0) {
    Var x{{1, 3, size, size}, buffer + offset}, w{{2, 3, 3, 3}, buffer + 8192}, y{{1, 2, size, size}, buffer + 16384};
    graph_convolution(operation, graph_tensor(&x, "abcd", "abcd", CUDNN_DATA_FLOAT),
                      graph_tensor(&w, "oihw", "oihw", CUDNN_DATA_FLOAT),
                      graph_tensor(&y, "abcd", "abcd", CUDNN_DATA_FLOAT), 1, 1, 1, 1, 1, 1);
}

void check_layouts() {
    Var nhwc{{2, 5, 7, 3}, buffer};  // Jittor's "acdb": n, h, w, c in memory
    GraphTensor data = graph_tensor(&nhwc, "acdb", "abcd", CUDNN_DATA_FLOAT);
    int64_t dims[] = {2, 3, 5, 7}, strides[] = {105, 1, 21, 3};
    for (int i = 0; i < 4; i++) assert(data.dims[i] == dims[i] && data.strides[i] == strides[i]);
    Var filter{{8, 3, 3, 3}, buffer};
    GraphTensor w = graph_tensor(&filter, "oihw", "oihw", CUDNN_DATA_FLOAT);
    assert(w.dims[0] == 8 && w.dims[1] == 3 && w.strides[0] == 27 && w.strides[1] == 9 && w.strides[3] == 1);
}

int main() {
    check_layouts();
    const auto forward = CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR;
    //                 down   half   tensor builds workspace   runs   ms
    instant_engines = {{true,  false, false, true,  0,          true,  0.1f},   // 0: float32 converted down: left out
                       {false, false, false, false, 0,          true,  0.1f},   // 1: does not build
                       {false, false, false, true,  1ll << 29,  true,  0.1f},   // 2: over 25% of the GPU's 1 GiB
                       {false, false, false, true,  0,          false, 0.1f},   // 3: fails to run: passed over
                       {false, false, false, true,  0,          true,  1.0f},   // 4: the fastest without TF32
                       {false, true,  false, true,  0,          true,  0.05f},  // 5: reduces in float16: left out
                       {false, false, true,  true,  8192,       true,  0.5f},   // 6: TF32, the fastest allowed
                       {false, false, false, true,  4096,       true,  3.0f}};  // 7: the slowest
    convolve(forward, 8);
    assert(last_engine == 6 && heuristics == 1 && temp_allocator.outstanding == 0);
    size_t kept = live.size();
    assert(kept == 8);  // one plan, with its three tensors, convolution, operation, graph and configuration

    int before = executions;
    convolve(forward, 8);  // the same shape: the cached plan, run once
    assert(heuristics == 1 && executions == before + 1 && last_engine == 6 && live.size() == kept);

    setenv("NVIDIA_TF32_OVERRIDE", "0", 1);  // no tensor cores for float32: engine 4
    convolve(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR, 16);
    unsetenv("NVIDIA_TF32_OVERRIDE");
    assert(last_engine == 4 && heuristics == 2);

    convolve(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR, 8);
    convolve(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR, 8, 1);  // 4-byte aligned: another plan
    assert(heuristics == 4);

    instant_engines = {{true, false, false, true, 0, true, 0.1f}};  // nothing usable: the fallback list
    fallback_engines = {{false, false, false, true, 0, true, 2.0f}};
    convolve(forward, 4);
    assert(heuristics == 6 && last_engine == 0);

    instant_engines = {{false, false, false, true, 0, false, 0.1f}};  // nothing runs: an error, nothing kept
    fallback_engines = {};
    size_t live_before = live.size();
    bool failed = false;
    try {
        convolve(forward, 5);
    } catch (const std::exception&) {
        failed = true;
    }
    assert(failed && live.size() == live_before && temp_allocator.outstanding == 0);
    assert(live.size() == 5 * kept);  // the five plans made, nothing else
    printf("mock cuDNN: all scenarios passed (%d executions, 5 plans kept)\n", executions);
    return 0;
}
