#pragma once
/// \file model/generate.hpp
/// Batched generation over the paged cache: greedy and sampled decoding (temperature, top-k,
/// top-p, seed, stop tokens), with requests that join and leave the batch between steps.
///
///     mlkv::model::generator<bf16, cache_t> gen(model, cache);
///     int id = gen.add(prompt, {.max_new_tokens = 64, .temperature = 0.8f, .top_p = 0.95f, .seed = 7});
///     while (!gen.idle()) for (const auto& e : gen.step()) ...  // e.request, e.token, e.finished
///
/// One step runs one forward pass: requests added since the last step contribute their whole
/// prompt (prefill), running ones their last sampled token (decode), all in one varlen batch.
/// A request leaves when it samples a stop token or reaches max_new_tokens; its sequence is
/// freed, and its pages serve the next request. Each request samples from its own generator
/// seeded by `seed`, so its tokens do not depend on what else is in the batch.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "../error.hpp"
#include "gpt_neox.hpp"

namespace mlkv::model {

/// How a request picks its tokens.
struct sampling {
  int max_new_tokens = 16;         ///< tokens to generate at most (>= 1)
  float temperature = 0.f;         ///< 0: greedy (argmax); > 0: sample from softmax(logits / T)
  int top_k = 0;                   ///< keep the k most likely tokens (0: all)
  float top_p = 1.f;               ///< keep the smallest set whose probability reaches p (1: all)
  std::uint64_t seed = 0;          ///< the request's random stream
  std::vector<std::int32_t> stop;  ///< tokens that end the request (emitted, then finished)
};

/// Picks a token from one row of logits. Greedy takes the first maximum. Sampling applies the
/// temperature, keeps the top_k largest, then the smallest prefix (by descending probability)
/// whose mass reaches top_p, renormalises and draws with `gen`.
inline std::int32_t pick_token(std::span<const float> logits, const sampling& s, std::mt19937_64& gen) {
  MLKV_CHECK(!logits.empty(), "no logits to sample from");
  if (s.temperature <= 0.f) {
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const int V = static_cast<int>(logits.size());
  std::vector<int> idx(static_cast<std::size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  // Descending by logit; ties by token id so the order is deterministic.
  auto by_logit = [&](int a, int b) {
    return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
           (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
  };
  int keep = (s.top_k > 0 && s.top_k < V) ? s.top_k : V;
  std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), by_logit);
  const double mx = logits[static_cast<std::size_t>(idx[0])];
  std::vector<double> p(static_cast<std::size_t>(keep));
  double sum = 0.0;
  for (int i = 0; i < keep; ++i) {
    p[static_cast<std::size_t>(i)] = std::exp((logits[static_cast<std::size_t>(idx[static_cast<std::size_t>(i)])] - mx) / s.temperature);
    sum += p[static_cast<std::size_t>(i)];
  }
  if (s.top_p < 1.f) {
    double mass = 0.0;
    int n = 0;
    while (n < keep) {
      mass += p[static_cast<std::size_t>(n)] / sum;
      ++n;
      if (mass >= static_cast<double>(s.top_p)) break;
    }
    keep = n;
    sum = std::accumulate(p.begin(), p.begin() + keep, 0.0);
  }
  const double u = std::uniform_real_distribution<double>(0.0, sum)(gen);
  double acc = 0.0;
  for (int i = 0; i < keep; ++i) {
    acc += p[static_cast<std::size_t>(i)];
    if (u < acc) return static_cast<std::int32_t>(idx[static_cast<std::size_t>(i)]);
  }
  return static_cast<std::int32_t>(idx[static_cast<std::size_t>(keep - 1)]);
}

/// Checks sampling settings against the vocabulary; throws naming the bad value and range.
inline void check_sampling(const sampling& s, int vocab) {
  MLKV_CHECK(s.max_new_tokens >= 1, "max_new_tokens (", s.max_new_tokens, ") must be at least 1");
  MLKV_CHECK(std::isfinite(s.temperature) && s.temperature >= 0.f, "temperature (", s.temperature,
             ") must be finite and >= 0");
  MLKV_CHECK(s.top_k >= 0, "top_k (", s.top_k, ") must be >= 0 (0 keeps every token)");
  MLKV_CHECK(s.top_p > 0.f && s.top_p <= 1.f, "top_p (", s.top_p, ") must be in (0, 1]");
  for (const std::int32_t t : s.stop) {
    MLKV_CHECK(t >= 0 && t < vocab, "stop token ", t, " is outside the vocabulary [0, ", vocab, ")");
  }
}

/// Batched generation over a paged cache (see the file comment).
template <class W, class Cache>
class generator {
 public:
  /// One generated token.
  struct event {
    int request = 0;          ///< the id add() returned
    std::int32_t token = 0;   ///< the token
    bool finished = false;    ///< the request ended with this token (stop token or length)
  };

  generator(cpu_model<W>& model, Cache& cache) : model_(model), cache_(cache) {}
  generator(const generator&) = delete;
  generator& operator=(const generator&) = delete;
  ~generator() {
    for (auto& r : running_) cache_.free(r.seq);
    for (auto& r : waiting_) cache_.free(r.seq);
  }

  /// Queues a request; it joins the batch at the next step. Returns its id.
  int add(std::span<const std::int32_t> prompt, const sampling& s) {
    MLKV_CHECK(!prompt.empty(), "a prompt needs at least one token");
    for (std::size_t i = 0; i < prompt.size(); ++i) {
      MLKV_CHECK(prompt[i] >= 0 && prompt[i] < model_.vocab(), "prompt token ", prompt[i], " (position ", i,
                 ") is outside the vocabulary [0, ", model_.vocab(), ")");
    }
    check_sampling(s, model_.vocab());
    request r;
    r.id = next_id_++;
    r.seq = cache_.add();
    r.pending.assign(prompt.begin(), prompt.end());
    r.s = s;
    r.gen.seed(s.seed);
    waiting_.push_back(std::move(r));
    return waiting_.back().id;
  }

  /// Ends a request now (queued or running) and frees its sequence; false when it is unknown.
  bool cancel(int id) {
    for (auto* list : {&waiting_, &running_}) {
      for (auto it = list->begin(); it != list->end(); ++it) {
        if (it->id == id) {
          cache_.free(it->seq);
          list->erase(it);
          return true;
        }
      }
    }
    return false;
  }

  /// True when no request is queued or running.
  bool idle() const { return waiting_.empty() && running_.empty(); }
  /// Requests in the batch (running) and queued for the next step.
  int running() const { return static_cast<int>(running_.size()); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  /// The cache sequence of request `id` (for inspection), or an error when unknown.
  seq_id sequence(int id) const {
    for (const auto* list : {&waiting_, &running_})
      for (const auto& r : *list)
        if (r.id == id) return r.seq;
    ::mlkv::detail::fail("request ", id, " is not queued or running");
  }

  /// One forward pass over every running and queued request; returns one event per request in
  /// the batch. On an error (e.g. the pool is full) nothing changes: the step can be retried after
  /// cancelling a request.
  std::vector<event> step() {
    std::vector<request*> batch;
    for (auto& r : running_) batch.push_back(&r);
    for (auto& r : waiting_) batch.push_back(&r);
    if (batch.empty()) return {};
    seqs_.clear();
    offsets_.assign(1, 0);
    tokens_.clear();
    for (request* r : batch) {
      seqs_.push_back(r->seq);
      tokens_.insert(tokens_.end(), r->pending.begin(), r->pending.end());
      offsets_.push_back(static_cast<std::int32_t>(tokens_.size()));
    }
    const int V = model_.vocab();
    logits_.resize(batch.size() * static_cast<std::size_t>(V));
    model_.forward(cache_, seqs_, offsets_, tokens_, logits_rows::last, logits_.data());

    std::vector<event> out;
    out.reserve(batch.size());
    for (std::size_t b = 0; b < batch.size(); ++b) {
      request& r = *batch[b];
      const std::int32_t t = pick_token(std::span<const float>(&logits_[b * static_cast<std::size_t>(V)], static_cast<std::size_t>(V)), r.s, r.gen);
      ++r.generated;
      const bool stop = std::find(r.s.stop.begin(), r.s.stop.end(), t) != r.s.stop.end();
      r.finished = stop || r.generated >= r.s.max_new_tokens;
      r.pending.assign(1, t);
      out.push_back(event{r.id, t, r.finished});
    }
    // Queued requests now run; finished ones leave and free their pages.
    for (auto& r : waiting_) running_.push_back(std::move(r));
    waiting_.clear();
    std::erase_if(running_, [&](request& r) {
      if (r.finished) cache_.free(r.seq);
      return r.finished;
    });
    return out;
  }

 private:
  struct request {
    int id = 0;
    seq_id seq{};
    std::vector<std::int32_t> pending;  ///< tokens to feed at the next step
    sampling s;
    std::mt19937_64 gen;
    int generated = 0;
    bool finished = false;
  };

  cpu_model<W>& model_;
  Cache& cache_;
  std::vector<request> running_, waiting_;
  int next_id_ = 0;
  std::vector<seq_id> seqs_;
  std::vector<std::int32_t> offsets_, tokens_;
  std::vector<float> logits_;
};

}  // namespace mlkv::model
