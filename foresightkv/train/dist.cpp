#include "foresightkv/train/dist.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "foresightkv/core/error.h"
#include "foresightkv/core/logging.h"

namespace fkv::train {
namespace {

class SingleComm final : public Comm {
 public:
  int64_t rank() const override { return 0; }
  int64_t world() const override { return 1; }
  std::vector<int64_t> broadcast(const std::vector<int64_t>& v) override { return v; }
  std::vector<double> all_gather(const std::vector<double>& mine) override { return mine; }
  std::vector<at::Tensor> all_gather_tensors(const std::vector<at::Tensor>& mine) override { return mine; }
};

std::vector<uint8_t> to_bytes(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

// Every collective is one numbered operation: rank r writes key fkv/<op>/<r>, then reads the others' keys
// (TCPStore::get blocks until they exist). A rank reaches operation op only after reading every key of op - 1,
// which every rank wrote after finishing op - 2: so at op, deleting one's own key of op - 2 is safe.
class StoreComm final : public Comm {
 public:
  StoreComm(int64_t rank, int64_t world, const std::string& host, uint16_t port, bool agent_store)
      : rank_(rank), world_(world) {
    c10d::TCPStoreOptions o;
    o.port = port;
    o.isServer = !agent_store && rank == 0;
    o.numWorkers = agent_store ? std::nullopt : std::optional<size_t>(static_cast<size_t>(world));
    o.waitWorkers = !agent_store;
    o.timeout = std::chrono::minutes(30);
    try {
      store_ = std::make_unique<c10d::TCPStore>(host, o);
    } catch (const std::exception& e) {
      throw Error(fmt::format("rank {}/{}: cannot reach the c10d store at {}:{} ({}); start the ranks with torchrun "
                              "(it sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)",
                              rank, world, host, port, e.what()));
    }
    FKV_LOG_INFO("rank {}/{}: c10d store {}:{} ({})", rank, world, host, port,
                 agent_store ? "torchrun's agent store" : (rank == 0 ? "served here" : "client"));
  }
  int64_t rank() const override { return rank_; }
  int64_t world() const override { return world_; }

  std::vector<int64_t> broadcast(const std::vector<int64_t>& v) override {
    const int64_t op = next();
    if (rank_ == 0) put(op, to_bytes(v.data(), v.size() * sizeof(int64_t)));
    const std::vector<uint8_t> b = store_->get(key(op, 0));
    std::vector<int64_t> out(b.size() / sizeof(int64_t));
    std::memcpy(out.data(), b.data(), b.size());
    return out;
  }

  std::vector<double> all_gather(const std::vector<double>& mine) override {
    const int64_t op = next();
    put(op, to_bytes(mine.data(), mine.size() * sizeof(double)));
    std::vector<double> out;
    for (int64_t r = 0; r < world_; ++r) {
      const std::vector<uint8_t> b = r == rank_ ? to_bytes(mine.data(), mine.size() * sizeof(double)) : store_->get(key(op, r));
      const size_t n = b.size() / sizeof(double);
      const size_t at = out.size();
      out.resize(at + n);
      std::memcpy(out.data() + at, b.data(), b.size());
    }
    return out;
  }

  std::vector<at::Tensor> all_gather_tensors(const std::vector<at::Tensor>& ts) override {
    const int64_t op = next();
    std::vector<at::Tensor> flat;
    size_t bytes = 0;
    for (const auto& t : ts) {
      FKV_CHECK(t.device().is_cpu() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble),
                "all_gather_tensors: fp32/fp64 CPU tensors only");
      flat.push_back(t.contiguous());
      bytes += static_cast<size_t>(t.numel()) * t.element_size();
    }
    std::vector<uint8_t> mine(bytes);
    size_t off = 0;
    for (const auto& t : flat) {
      const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
      std::memcpy(mine.data() + off, t.data_ptr(), n);
      off += n;
    }
    put(op, mine);
    std::vector<at::Tensor> out;
    for (int64_t r = 0; r < world_; ++r) {
      const std::vector<uint8_t> b = r == rank_ ? mine : store_->get(key(op, r));
      FKV_CHECK(b.size() == bytes, "all_gather_tensors: rank {} sent {} bytes, expected {} (ranks disagree on shapes)",
                r, b.size(), bytes);
      size_t o = 0;
      for (const auto& t : flat) {
        const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
        at::Tensor part = at::empty_like(t);
        std::memcpy(part.data_ptr(), b.data() + o, n);
        out.push_back(part);
        o += n;
      }
    }
    return out;
  }

 private:
  static std::string key(int64_t op, int64_t r) { return "fkv/" + std::to_string(op) + "/" + std::to_string(r); }
  int64_t next() {
    const int64_t op = op_++;
    if (op >= 2) store_->deleteKey(key(op - 2, rank_));
    return op;
  }
  void put(int64_t op, const std::vector<uint8_t>& b) {
    store_->set(key(op, rank_), b);
    bytes_sent_ += static_cast<int64_t>(b.size());
  }

  int64_t rank_, world_, op_ = 0;
  std::unique_ptr<c10d::TCPStore> store_;
};

int64_t env_int(const char* name, int64_t dflt) {
  const char* v = std::getenv(name);
  if (!(v && *v)) return dflt;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  FKV_CHECK_ARG(end && *end == '\0', "environment {}='{}' is not an integer", name, v);
  return x;
}

}  // namespace

std::unique_ptr<Comm> Comm::single() { return std::make_unique<SingleComm>(); }

std::unique_ptr<Comm> Comm::from_env() {
  const int64_t world = env_int("WORLD_SIZE", 1), rank = env_int("RANK", 0);
  if (world <= 1) return single();
  FKV_CHECK_ARG(rank >= 0 && rank < world, "RANK {} outside [0, WORLD_SIZE {})", rank, world);
  const char* addr = std::getenv("MASTER_ADDR");
  const int64_t port = env_int("MASTER_PORT", 29500);
  FKV_CHECK_ARG(port > 0 && port < 65536, "MASTER_PORT {} is not a TCP port", port);
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  const bool agent_store = agent && (std::string(agent) == "True" || std::string(agent) == "1");
  return std::make_unique<StoreComm>(rank, world, addr && *addr ? addr : "127.0.0.1", static_cast<uint16_t>(port),
                                     agent_store);
}

std::string rank_device(const std::string& device, int64_t world, int64_t local_rank) {
  if (device != "cuda" || world <= 1) return device;
  FKV_CHECK_ARG(local_rank >= 0, "device 'cuda' under {} processes needs LOCAL_RANK (or RANK) in the environment to "
                "pick each rank's GPU; start the job with torchrun or give --device cuda:N per process",
                world);
  return "cuda:" + std::to_string(local_rank);
}

std::string rank_device_from_env(const std::string& device) {
  const int64_t world = env_int("WORLD_SIZE", 1);
  return rank_device(device, world, env_int("LOCAL_RANK", env_int("RANK", -1)));
}

}  // namespace fkv::train
