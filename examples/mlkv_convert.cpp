// mlkv-convert: the MLKV paper's converter. Turns an MHA GPT-NeoX / Pythia checkpoint directory
// (config.json + model.safetensors) into a GQA, MQA or MLKV checkpoint with the arithmetic of
// the paper's convert_to_mlkv.py (see mlkv/io/convert.hpp for exactly what is computed).
//
//   mlkv-convert --kv-heads 1 --kv-layers 4 pythia-160m pythia-160m-mlkv4
//
// Exit status: 0 done, 1 the conversion failed (bad files, refused geometry), 2 bad arguments.

#include <mlkv/io/convert.hpp>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace {

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: mlkv-convert --kv-heads N --kv-layers N [--force] [--torch-lanes 8|16] INPUT_DIR OUTPUT_DIR\n"
               "\n"
               "Converts an MHA GPT-NeoX checkpoint (config.json + model.safetensors) into a GQA/MQA/MLKV\n"
               "checkpoint as the MLKV paper's convert_to_mlkv.py does: K/V heads averaged within each\n"
               "group, non-owner layers folded pairwise into their owner, the MLP widened to keep the\n"
               "parameter count, num_key_value_heads/num_key_value_layers written to config.json.\n"
               "\n"
               "  --kv-heads N   KV heads per owner layer (divides num_attention_heads; 1 = MQA)\n"
               "  --kv-layers N  owner layers that keep K/V (1..num_hidden_layers)\n"
               "  --force        replace a checkpoint already in OUTPUT_DIR\n"
               "  --torch-lanes N  vector width (floats) of the PyTorch build whose summation order\n"
               "                 to reproduce: 8 (AVX2 and default builds; the default) or 16 (AVX-512);\n"
               "                 it changes the last bit of some head means for groups of 5+ heads\n"
               "  -h, --help     this text\n"
               "\n"
               "The paper's nine Pythia-160M configurations: MHA-144 (12,12) GQA-48 (4,12) MLKV-48 (12,4)\n"
               "MQA-12 (1,12) MLKV-12 (3,4) MLKV-6 (1,6) MLKV-4 (1,4) MLKV-2 (1,2) MLKV-1 (1,1), as\n"
               "(--kv-heads, --kv-layers).\n");
}

bool parse_int(std::string_view s, int& out) {
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && out > 0;
}

}  // namespace

int main(int argc, char** argv) {
  mlkv::io::convert_options opt;
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    }
    if (a == "--force") {
      opt.overwrite = true;
    } else if (a == "--kv-heads" || a == "--kv-layers" || a == "--torch-lanes") {
      int v = 0;
      if (i + 1 >= argc || !parse_int(argv[i + 1], v)) {
        std::fprintf(stderr, "mlkv-convert: %s needs a positive integer\n", argv[i]);
        usage(stderr);
        return 2;
      }
      (a == "--kv-heads" ? opt.kv_heads : a == "--kv-layers" ? opt.kv_layers : opt.torch_lanes) = v;
      ++i;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "mlkv-convert: unknown option %s\n", argv[i]);
      usage(stderr);
      return 2;
    } else {
      dirs.emplace_back(a);
    }
  }
  if (opt.torch_lanes != 8 && opt.torch_lanes != 16) {
    std::fprintf(stderr, "mlkv-convert: --torch-lanes must be 8 or 16, not %d\n", opt.torch_lanes);
    usage(stderr);
    return 2;
  }
  if (dirs.size() != 2 || opt.kv_heads == 0 || opt.kv_layers == 0) {
    std::fprintf(stderr, "mlkv-convert: need --kv-heads, --kv-layers, INPUT_DIR and OUTPUT_DIR\n");
    usage(stderr);
    return 2;
  }
  try {
    // Arguments that do not fit this checkpoint (KV heads that do not divide its heads, KV
    // layers out of range, a placement the library would read differently) are usage errors.
    const mlkv::io::gpt_neox_config cfg = mlkv::io::read_gpt_neox_config(std::filesystem::path(dirs[0]) / "config.json");
    if (cfg.is_mha()) {
      try {
        (void)mlkv::io::plan_conversion(cfg, opt.kv_heads, opt.kv_layers);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "mlkv-convert: %s\n", e.what());
        usage(stderr);
        return 2;
      }
    }
    const mlkv::io::conversion_plan p = mlkv::io::convert_checkpoint(dirs[0], dirs[1], opt);
    std::string owners;
    for (std::size_t i = 0; i < p.owners.size(); ++i) owners += (i ? "," : "") + std::to_string(p.owners[i]);
    std::printf("converted %s -> %s\n", dirs[0].c_str(), dirs[1].c_str());
    std::printf("  KV heads %d -> %d per layer, KV layers %d -> %d (owners %s)\n", p.heads, p.kv_heads, p.layers,
                p.kv_layers, owners.c_str());
    std::printf("  total KV heads %d -> %lld, parameters moved to the MLP: %lld (%lld per layer)\n",
                p.heads * p.layers, static_cast<long long>(p.kv_heads) * p.kv_layers, p.params_lost,
                p.params_per_layer);
    std::printf("  intermediate_size %d -> %d\n", p.old_intermediate, p.new_intermediate);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlkv-convert: %s\n", e.what());
    return 1;
  }
}
