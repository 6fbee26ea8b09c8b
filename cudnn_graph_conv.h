// 2-D convolutions through cuDNN's graph ("backend") API, as PyTorch runs them, for the adapted
// copy of Jittor that cuda_setup.py makes when MCCNET_CONV_API=graph: the jit_run of Jittor's
// three cuDNN convolution ops (forward, backward data, backward filter) becomes one call of
// graph_convolution. Jittor's own ops call the legacy API (cudnnFindConvolution*AlgorithmEx),
// whose algorithms gain little from TF32 on the GPUs measured, where PyTorch's convolutions
// gain about 3x.
//
// For each shape, the engine configurations that cuDNN's heuristics propose are built into
// execution plans in their order; the first few that build are timed on the real data and the
// fastest is kept (Jittor's Find does the same with legacy algorithms). Engines that convert
// float32 inputs to a narrower type, or that reduce float16 in float16, are left out: the
// accumulation stays float32, as the adapted copy asks of the legacy API too. TF32 is cuDNN's
// default for float32 and NVIDIA_TF32_OVERRIDE=0 turns it off, as with PyTorch.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>
#include "var.h"
#include "executor.h"
#include "mem/mem_info.h"
#include "cudnn_wrapper.h"

namespace jittor {

// The plans timed for each new shape: the first this many that build, in the heuristics' order.
constexpr int graph_candidates = 8;
// Each candidate runs once to warm up, then this many times timed.
constexpr int graph_timed_runs = 3;

// A convolution's tensor in cuDNN's logical order (n, c, h, w for data; k, c, r, s for filters).
struct GraphTensor {
    int64_t dims[4];
    int64_t strides[4];
    cudnnDataType_t type;
    void* data;
};

// `format` is Jittor's layout of `v` (e.g. "abcd", "acdb", "oihw"); `order` names the logical
// axes in that alphabet ("abcd" for data, "oihw" for filters). Jittor's vars are contiguous.
inline GraphTensor graph_tensor(Var* v, const char* format, const char* order, cudnnDataType_t type) {
    int64_t contiguous[4];
    contiguous[3] = 1;
    for (int i = 2; i >= 0; i--) contiguous[i] = contiguous[i + 1] * v->shape[i + 1];
    GraphTensor tensor;
    for (int i = 0; i < 4; i++) {
        const char* axis = strchr(format, order[i]);
        ASSERT(axis) << "layout" << format << "has no axis" << order[i];
        tensor.dims[i] = v->shape[axis - format];
        tensor.strides[i] = contiguous[axis - format];
    }
    tensor.type = type;
    tensor.data = v->mem_ptr;
    return tensor;
}

// Owns one descriptor of the backend API.
struct GraphDescriptor {
    cudnnBackendDescriptor_t handle = nullptr;

    explicit GraphDescriptor(cudnnBackendDescriptorType_t type) {
        checkCudaErrors(cudnnBackendCreateDescriptor(type, &handle));
    }
    ~GraphDescriptor() { cudnnBackendDestroyDescriptor(handle); }
    GraphDescriptor(const GraphDescriptor&) = delete;
    GraphDescriptor& operator=(const GraphDescriptor&) = delete;

    void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values) {
        checkCudaErrors(cudnnBackendSetAttribute(handle, name, type, count, values));
    }
    void set(cudnnBackendAttributeName_t name, const GraphDescriptor& value) {
        set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value.handle);
    }
    void finalize() { checkCudaErrors(cudnnBackendFinalize(handle)); }
};

typedef std::shared_ptr<GraphDescriptor> GraphDescriptorPtr;

inline GraphDescriptorPtr graph_descriptor(cudnnBackendDescriptorType_t type) {
    return std::make_shared<GraphDescriptor>(type);
}

// A plan and everything it was built from (kept alive with it), and the workspace it needs.
struct GraphPlan {
    GraphDescriptorPtr plan;
    std::vector<GraphDescriptorPtr> parts;
    int64_t workspace;
};

// The attributes that name the three tensors, the convolution and alpha/beta of each operation,
// in the order x (data or its gradient), w (filter or its gradient), y (output or its gradient).
struct GraphOperation {
    cudnnBackendDescriptorType_t type;
    cudnnBackendAttributeName_t x, w, y, convolution, alpha, beta;
};

inline GraphOperation graph_operation(cudnnBackendDescriptorType_t type) {
    switch (type) {
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR:
        return {type, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA};
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR:
        return {type, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA};
    default:
        ASSERT(type == CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR) << "not a convolution" << type;
        return {type, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
                CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
                CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA};
    }
}

// The largest power of two, up to 16, that divides the address: what the kernels may assume.
inline int64_t graph_alignment(const void* data) {
    int64_t alignment = 16;
    while (reinterpret_cast<uintptr_t>(data) % alignment) alignment /= 2;
    return alignment;
}

inline GraphDescriptorPtr graph_tensor_descriptor(int64_t uid, const GraphTensor& tensor) {
    auto descriptor = graph_descriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    int64_t alignment = graph_alignment(tensor.data);
    descriptor->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &tensor.type);
    descriptor->set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, tensor.dims);
    descriptor->set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, tensor.strides);
    descriptor->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    descriptor->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    descriptor->finalize();
    return descriptor;
}

// Jittor pads symmetrically; cross-correlation, as Jittor's legacy descriptors ask.
inline GraphDescriptorPtr graph_convolution_descriptor(const int64_t padding[2], const int64_t stride[2],
                                                       const int64_t dilation[2]) {
    auto descriptor = graph_descriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    cudnnDataType_t accumulation = CUDNN_DATA_FLOAT;
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    int64_t spatial_dims = 2;
    descriptor->set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &accumulation);
    descriptor->set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
    descriptor->set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial_dims);
    descriptor->set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, padding);
    descriptor->set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, padding);
    descriptor->set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride);
    descriptor->set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dilation);
    descriptor->finalize();
    return descriptor;
}

// Whether an engine configuration keeps the numerics asked for (see the top of this file).
inline bool graph_numerics_kept(const GraphDescriptor& config, cudnnDataType_t data_type) {
    GraphDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    int64_t count = 0;
    checkCudaErrors(cudnnBackendGetAttribute(config.handle, CUDNN_ATTR_ENGINECFG_ENGINE,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count, &engine.handle));
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    checkCudaErrors(cudnnBackendGetAttribute(engine.handle, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                             CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &count, notes));
    const char* tf32 = getenv("NVIDIA_TF32_OVERRIDE");
    bool tf32_off = tf32 && !strcmp(tf32, "0");
    for (int64_t i = 0; i < count; i++) {
        if (notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) return false;
        if (notes[i] == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION) return false;
        if (notes[i] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE && data_type == CUDNN_DATA_FLOAT && tf32_off) return false;
    }
    return true;
}

// The engine configurations cuDNN's heuristics (in `mode`) propose for `graph`, best first.
inline std::vector<GraphDescriptorPtr> graph_engine_configs(const GraphDescriptorPtr& graph,
                                                            cudnnBackendHeurMode_t mode) {
    GraphDescriptor heuristics(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    heuristics.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, *graph);
    heuristics.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    heuristics.finalize();
    int64_t count = 0;
    checkCudaErrors(cudnnBackendGetAttribute(heuristics.handle, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    std::vector<GraphDescriptorPtr> configs;
    std::vector<cudnnBackendDescriptor_t> handles;
    for (int64_t i = 0; i < count; i++) {
        configs.push_back(graph_descriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
        handles.push_back(configs.back()->handle);
    }
    checkCudaErrors(cudnnBackendGetAttribute(heuristics.handle, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &count, handles.data()));
    configs.resize(count);
    return configs;
}

// Adds to `plans` those of `configs` that build, keep the numerics and fit the workspace limit,
// up to graph_candidates plans in all.
inline void add_graph_candidate_plans(std::vector<GraphPlan>& plans, const std::vector<GraphDescriptorPtr>& configs,
                                      const std::vector<GraphDescriptorPtr>& parts, cudnnDataType_t data_type) {
    for (const auto& config : configs) {
        if ((int)plans.size() == graph_candidates) return;
        if (!graph_numerics_kept(*config, data_type)) continue;
        auto plan = graph_descriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &cudnn_handle);
        plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, *config);
        if (cudnnBackendFinalize(plan->handle) != CUDNN_STATUS_SUCCESS) continue;
        int64_t workspace = 0;
        int64_t count = 0;
        checkCudaErrors(cudnnBackendGetAttribute(plan->handle, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                 CUDNN_TYPE_INT64, 1, &count, &workspace));
        if (workspace > mem_info.total_cuda_ram * max_workspace_ratio) continue;
        GraphPlan candidate{plan, parts, workspace};
        candidate.parts.push_back(config);
        plans.push_back(candidate);
    }
}

// Plans for the first graph_candidates configurations that build, keep the numerics and fit
// Jittor's workspace limit (max_workspace_ratio of the GPU's memory, as for its legacy ops):
// from the heuristics' usual mode, else from their fallback list.
inline std::vector<GraphPlan> graph_candidate_plans(const std::vector<GraphDescriptorPtr>& parts,
                                                    cudnnDataType_t data_type) {
    std::vector<GraphPlan> plans;
    for (auto mode : {CUDNN_HEUR_MODE_INSTANT, CUDNN_HEUR_MODE_FALLBACK}) {
        add_graph_candidate_plans(plans, graph_engine_configs(parts.back(), mode), parts, data_type);
        if (plans.size()) break;
    }
    return plans;
}

// The unique ids of x, w and y in every graph.
constexpr int64_t graph_uids[3] = {1, 2, 3};

inline cudnnStatus_t graph_execute(const GraphPlan& plan, void* const data[3], void* workspace) {
    GraphDescriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, graph_uids);
    pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, data);
    pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
    pack.finalize();
    return cudnnBackendExecute(cudnn_handle, plan.plan->handle, pack.handle);
}

// The candidate that runs fastest on the data at hand (the output is overwritten, as alpha=1, beta=0);
// one that fails to run is passed over, as PyTorch does.
inline GraphPlan graph_fastest(const std::vector<GraphPlan>& candidates, void* const data[3]) {
    ASSERT(candidates.size()) << "cuDNN offers no engine for this convolution";
    int64_t most = 0;
    for (const auto& candidate : candidates) most = std::max(most, candidate.workspace);
    size_t allocation = 0;
    void* workspace = most ? exe.temp_allocator->alloc(most, allocation) : nullptr;
    cudaStream_t stream;
    checkCudaErrors(cudnnGetStream(cudnn_handle, &stream));
    cudaEvent_t start, stop;
    checkCudaErrors(cudaEventCreate(&start));
    checkCudaErrors(cudaEventCreate(&stop));
    size_t fastest = candidates.size();
    float fastest_ms = std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < candidates.size(); i++) {
        if (graph_execute(candidates[i], data, workspace) != CUDNN_STATUS_SUCCESS) continue;
        checkCudaErrors(cudaEventRecord(start, stream));
        for (int run = 0; run < graph_timed_runs; run++)
            checkCudaErrors(graph_execute(candidates[i], data, workspace));
        checkCudaErrors(cudaEventRecord(stop, stream));
        checkCudaErrors(cudaEventSynchronize(stop));
        float ms = 0;
        checkCudaErrors(cudaEventElapsedTime(&ms, start, stop));
        if (ms < fastest_ms) fastest = i, fastest_ms = ms;
    }
    checkCudaErrors(cudaEventDestroy(start));
    checkCudaErrors(cudaEventDestroy(stop));
    if (workspace) exe.temp_allocator->free(workspace, most, allocation);
    ASSERT(fastest < candidates.size()) << "no engine that cuDNN offers for this convolution runs";
    return candidates[fastest];
}

// Everything a plan depends on: the operation, each tensor's type, shape, strides and alignment,
// and the convolution's parameters.
inline std::string graph_key(cudnnBackendDescriptorType_t operation, const GraphTensor* tensors[3],
                             const int64_t parameters[6]) {
    std::string key = std::to_string(operation);
    for (int t = 0; t < 3; t++) {
        key += "|" + std::to_string(tensors[t]->type) + ":" + std::to_string(graph_alignment(tensors[t]->data));
        for (int i = 0; i < 4; i++)
            key += "," + std::to_string(tensors[t]->dims[i]) + "/" + std::to_string(tensors[t]->strides[i]);
    }
    for (int i = 0; i < 6; i++) key += ";" + std::to_string(parameters[i]);
    return key;
}

// The plan for a convolution of this kind and shape: made, timed and kept the first time.
inline const GraphPlan& graph_plan(cudnnBackendDescriptorType_t operation, const GraphTensor* tensors[3],
                                   const int64_t parameters[6], void* const data[3]) {
    static std::unordered_map<std::string, GraphPlan> plans;
    std::string key = graph_key(operation, tensors, parameters);
    auto found = plans.find(key);
    if (found != plans.end()) return found->second;

    GraphOperation names = graph_operation(operation);
    std::vector<GraphDescriptorPtr> parts;
    for (int t = 0; t < 3; t++) parts.push_back(graph_tensor_descriptor(graph_uids[t], *tensors[t]));
    parts.push_back(graph_convolution_descriptor(parameters, parameters + 2, parameters + 4));
    auto op = graph_descriptor(operation);
    float alpha = 1, beta = 0;
    op->set(names.x, *parts[0]);
    op->set(names.w, *parts[1]);
    op->set(names.y, *parts[2]);
    op->set(names.convolution, *parts[3]);
    op->set(names.alpha, CUDNN_TYPE_FLOAT, 1, &alpha);
    op->set(names.beta, CUDNN_TYPE_FLOAT, 1, &beta);
    op->finalize();
    parts.push_back(op);
    auto graph = graph_descriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    graph->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, *op);
    graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &cudnn_handle);
    graph->finalize();
    parts.push_back(graph);

    GraphPlan plan = graph_fastest(graph_candidate_plans(parts, tensors[0]->type), data);
    return plans.emplace(key, plan).first->second;
}

// One convolution: `operation` is CUDNN_BACKEND_OPERATION_CONVOLUTION_{FORWARD,BACKWARD_DATA,
// BACKWARD_FILTER}_DESCRIPTOR; x, w and y are the data, filter and output or their gradients.
inline void graph_convolution(cudnnBackendDescriptorType_t operation, const GraphTensor& x, const GraphTensor& w,
                              const GraphTensor& y, int paddingh, int paddingw, int strideh, int stridew,
                              int dilationh, int dilationw) {
    const GraphTensor* tensors[3] = {&x, &w, &y};
    const int64_t parameters[6] = {paddingh, paddingw, strideh, stridew, dilationh, dilationw};
    void* const data[3] = {x.data, w.data, y.data};
    const GraphPlan& plan = graph_plan(operation, tensors, parameters, data);
    size_t allocation = 0;
    void* workspace = plan.workspace ? exe.temp_allocator->alloc(plan.workspace, allocation) : nullptr;
    checkCudaErrors(graph_execute(plan, data, workspace));
    if (workspace) exe.temp_allocator->free(workspace, plan.workspace, allocation);
}

} // jittor
