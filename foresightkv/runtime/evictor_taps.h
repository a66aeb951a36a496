// The tap that feeds a forward's post-RoPE queries to an Evictor's statistics buffer (evict/evictor.h).
// Shared by the generation loop and the teacher-forced fidelity runner.
#pragma once
#include "foresightkv/evict/evictor.h"
#include "foresightkv/model/transformer.h"

namespace fkv::runtime {

class EvictorTaps final : public model::ForwardTaps {
 public:
  explicit EvictorTaps(evict::Evictor& e) : e_(e) {}
  void on_qkv(int64_t layer, const at::Tensor& q, const at::Tensor&, const at::Tensor&) override {
    e_.observe_queries(layer, q);
  }

 private:
  evict::Evictor& e_;
};

}  // namespace fkv::runtime
