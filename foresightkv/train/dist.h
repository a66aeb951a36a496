// Process group for fkv-train grpo: one process, or several started by `torchrun` (RANK / WORLD_SIZE /
// MASTER_ADDR / MASTER_PORT in the environment). Collectives go through c10d's TCPStore — the store torchrun's
// agent already serves (TORCHELASTIC_USE_AGENT_STORE=True: every rank connects as a client), else rank 0 serves
// it. The PyPI torch wheel ships c10d's TCPStore but not the Gloo headers, so ProcessGroupGloo cannot be built
// from C++ against it; the judge's gradients are small (0.1-0.6 MB per step), so store-based collectives cost
// milliseconds. Gathers return rank order, so every rank reduces bit-identically.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fkv::train {

class Comm {
 public:
  virtual ~Comm() = default;
  /// World of one process (no store).
  static std::unique_ptr<Comm> single();
  /// From the torchrun environment: RANK and WORLD_SIZE (absent: single()), MASTER_ADDR, MASTER_PORT.
  static std::unique_ptr<Comm> from_env();

  virtual int64_t rank() const = 0;
  virtual int64_t world() const = 0;
  /// Rank 0's values on every rank.
  virtual std::vector<int64_t> broadcast(const std::vector<int64_t>& v) = 0;
  /// Every rank's values, concatenated in rank order.
  virtual std::vector<double> all_gather(const std::vector<double>& mine) = 0;
  /// Every rank's tensors (CPU, fp32/fp64, the same count and shapes on every rank), concatenated in rank order.
  /// The caller reduces them in a fixed order, so a sum does not depend on the number of ranks.
  virtual std::vector<at::Tensor> all_gather_tensors(const std::vector<at::Tensor>& mine) = 0;
  /// Bytes this rank wrote to the store so far (what one step communicates).
  int64_t bytes_sent() const { return bytes_sent_; }

 protected:
  int64_t bytes_sent_ = 0;
};

/// The device of one rank: under torchrun with several processes, a bare "cuda" means the rank's own GPU,
/// "cuda:<local_rank>" (LOCAL_RANK, as torch.distributed scripts use it), so `--nproc_per_node=8 ... --device cuda`
/// spreads the ranks over 8 GPUs; an explicit "cuda:N" or "cpu" is kept as given. local_rank < 0: unknown.
std::string rank_device(const std::string& device, int64_t world, int64_t local_rank);
/// rank_device with world from WORLD_SIZE and local_rank from LOCAL_RANK (else RANK) of the environment.
std::string rank_device_from_env(const std::string& device);

}  // namespace fkv::train
