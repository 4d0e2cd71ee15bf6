// The engine's program harness (sim/engine_harness.py) under Verilator with a C++ main of its
// own: no cocotb, no VPI, no Python in the per-cycle loop.
//
//     Vtessera_top MANIFEST [WAVES]
//
// MANIFEST is a text file of jobs, one directive per line:
//
//     job
//     program FILE        instruction words, one hexadecimal word a line
//     memory FILE         the memory image, raw bytes from address 0
//     stall N             the memory refuses requests with chance N/256
//     timeout N           give up after N cycles
//     predicted N         the cycle model's figure, for progress lines only
//     report_ms N         at most one progress line per N ms (default 250; 0: every 64k cycles)
//     read ADDR LEN FILE  after the run, write memory bytes [ADDR, ADDR+LEN) to FILE
//     out FILE            the result, JSON: cycles, error, error_code, counters, mem_reads, ...
//     end
//
// and, outside any job, "coverage FILE": write Verilator's coverage counts there at the end
// (a build with --coverage-line --coverage-toggle).
//
// Each job starts from reset with the instruction memory and the memory cleared, then loaded
// from the files through the two memories' storage arrays (made visible by sim/cpp/public.vlt:
// nothing else of the design is). While a job runs, a line "progress JOB CYCLES PREDICTED" goes
// to stdout every quarter second (checked every 64k cycles). With WAVES (a build with --trace or --trace-fst), every signal
// is recorded into that file.

#include "Vtessera_top.h"
#include "verilated.h"
#include "verilated_syms.h"
#if VM_COVERAGE
#include "verilated_cov.h"
#endif

#if VM_TRACE_FST
#include "verilated_fst_c.h"
typedef VerilatedFstC Trace;
#elif VM_TRACE
#include "verilated_vcd_c.h"
typedef VerilatedVcdC Trace;
#endif

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "engine harness: %s\n", what.c_str());
    std::exit(2);
}

// One unpacked array of the design (a memory), as Verilator lays it out: element i at
// data + i * size, each element little-endian in `size` bytes (VlWide words low first).
struct Array {
    uint8_t* data = nullptr;
    size_t size = 0;      // bytes per element
    size_t depth = 0;     // elements
    size_t bits = 0;      // packed bits per element

    void clear() const { std::memset(data, 0, size * depth); }
    uint8_t* at(size_t i) const { return data + i * size; }
};

Array find_array(VerilatedContext& ctx, const char* scope_suffix, const char* name) {
    const VerilatedScopeNameMap* scopes = ctx.scopeNameMap();
    for (const auto& kv : *scopes) {
        std::string scope = kv.first;
        size_t n = std::strlen(scope_suffix);
        if (scope.size() < n || scope.compare(scope.size() - n, n, scope_suffix) != 0) continue;
        const VerilatedVarNameMap* vars = kv.second->varsp();
        if (!vars) continue;
        auto it = vars->find(name);
        if (it == vars->end()) continue;
        const VerilatedVar& var = it->second;
        if (var.udims() != 1) fail(std::string(name) + " is not a one-dimensional memory");
        Array a;
        a.data = static_cast<uint8_t*>(var.datap());
        a.size = var.entSize();
        a.depth = static_cast<size_t>(var.elements(1));
        a.bits = var.entBits();
        return a;
    }
    fail(std::string("no public memory ") + name + " in a scope ending " + scope_suffix +
         " (was the model built with sim/cpp/public.vlt?)");
}

std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("cannot read " + path);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void write_file(const std::string& path, const uint8_t* data, size_t n) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n));
    if (!f) fail("cannot write " + path);
}

// A hexadecimal word into `out` (`size` bytes, little-endian).
void parse_hex(const std::string& text, uint8_t* out, size_t size) {
    std::memset(out, 0, size);
    size_t nibble = 0;
    for (size_t i = text.size(); i-- > 0;) {
        char c = text[i];
        int v = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (v < 0) fail("not a hexadecimal word: " + text);
        if (v && nibble / 2 >= size) fail("instruction word too wide: " + text);
        if (nibble / 2 < size) out[nibble / 2] |= static_cast<uint8_t>(v << (4 * (nibble % 2)));
        ++nibble;
    }
}

struct Region {
    uint64_t addr, length;
    std::string file;
};

struct Job {
    std::string program, memory, out;
    uint64_t stall = 0, timeout = 0, predicted = 0, report_ms = 250;
    std::vector<Region> read;
};

std::vector<Job> read_manifest(const std::string& path, std::string& coverage) {
    std::ifstream f(path);
    if (!f) fail("cannot read " + path);
    std::vector<Job> jobs;
    std::string line;
    bool open = false;
    while (std::getline(f, line)) {
        std::istringstream in(line);
        std::string key;
        if (!(in >> key)) continue;
        if (key == "job") { jobs.emplace_back(); open = true; continue; }
        if (key == "coverage" && !open) {
            if (!(in >> coverage)) fail("manifest: malformed line: " + line);
            continue;
        }
        if (!open) fail("manifest: '" + key + "' outside a job");
        Job& j = jobs.back();
        if (key == "end") open = false;
        else if (key == "program") in >> j.program;
        else if (key == "memory") in >> j.memory;
        else if (key == "out") in >> j.out;
        else if (key == "stall") in >> j.stall;
        else if (key == "timeout") in >> j.timeout;
        else if (key == "predicted") in >> j.predicted;
        else if (key == "report_ms") in >> j.report_ms;
        else if (key == "read") { Region r; in >> r.addr >> r.length >> r.file; j.read.push_back(r); }
        else fail("manifest: unknown directive " + key);
        if (in.fail()) fail("manifest: malformed line: " + line);
    }
    return jobs;
}

// Little-endian 32-bit words of an output port of any width.
template <typename T> std::vector<uint32_t> words_of(const T& port) {
    std::vector<uint32_t> w((sizeof(T) + 3) / 4);
    std::memcpy(w.data(), &port, sizeof(T));
    return w;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) fail("usage: Vtessera_top MANIFEST [WAVES]");
    std::string coverage;
    std::vector<Job> jobs = read_manifest(argv[1], coverage);
#if !VM_COVERAGE
    if (!coverage.empty()) fail("this build counts no coverage (build it with coverage)");
#endif

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(1, argv);
    auto top = std::make_unique<Vtessera_top>(ctx.get());
#if VM_TRACE
    std::unique_ptr<Trace> trace;
    if (argc > 2) {
        ctx->traceEverOn(true);
        trace = std::make_unique<Trace>();
        top->trace(trace.get(), 99);
        trace->open(argv[2]);
    }
    auto dump = [&]() { if (trace) trace->dump(ctx->time()); };
#else
    if (argc > 2) fail("this build records no waveforms (build it with waves)");
    auto dump = []() {};
#endif
    auto tick = [&]() {
        top->clk = 1;
        top->eval();
        ctx->timeInc(5);
        dump();
        top->clk = 0;
        top->eval();
        ctx->timeInc(5);
        dump();
    };

    Array imem = find_array(*ctx, ".tessera_top", "imem");
    Array storage = find_array(*ctx, ".mem", "storage");
    const size_t width = storage.bits / 8;   // bytes per memory word

    using clock = std::chrono::steady_clock;
    for (size_t n = 0; n < jobs.size(); ++n) {
        const Job& job = jobs[n];
        top->rst = 1;
        top->start = 0;
        top->clk = 0;
        top->eval();
        tick();
        tick();
        top->rst = 0;

        imem.clear();
        std::ifstream prog(job.program);
        if (!prog) fail("cannot read " + job.program);
        std::string word;
        size_t count = 0;
        while (prog >> word) {
            if (count == imem.depth)
                fail("the program has more instructions than the instruction memory holds (" +
                     std::to_string(imem.depth) + ")");
            parse_hex(word, imem.at(count++), imem.size);
        }
        storage.clear();
        std::vector<uint8_t> image = read_file(job.memory);
        if (image.size() > storage.depth * width)
            fail("the memory image (" + std::to_string(image.size()) +
                 " bytes) is larger than the simulated memory");
        for (size_t i = 0; i < image.size(); ++i)
            storage.at(i / width)[i % width] = image[i];

        top->n_insns = static_cast<uint32_t>(count);
        top->stall = static_cast<uint8_t>(job.stall);
        top->start = 1;
        tick();
        top->start = 0;
        uint64_t cycles = 0;
        const auto begin = clock::now();
        auto last = begin;
        bool finished = true;
        while (!top->done) {
            tick();
            if (++cycles >= job.timeout) { finished = false; break; }
            if ((cycles & 0xffff) == 0 && clock::now() - last >= std::chrono::milliseconds(job.report_ms)) {
                last = clock::now();
                std::printf("progress %zu %llu %llu\n", n, static_cast<unsigned long long>(cycles),
                            static_cast<unsigned long long>(job.predicted));
                std::fflush(stdout);
            }
        }
        // read back at the edge done rose, as sim/tb_engine.py does: after an illegal
        // instruction the units still running would count on
        const double seconds = std::chrono::duration<double>(clock::now() - begin).count();

        for (const Region& r : job.read) {
            if (r.addr + r.length > storage.depth * width)
                fail("a region to read lies outside the simulated memory");
            std::vector<uint8_t> bytes(r.length);
            for (uint64_t i = 0; i < r.length; ++i) {
                uint64_t a = r.addr + i;
                bytes[i] = storage.at(a / width)[a % width];
            }
            write_file(r.file, bytes.data(), bytes.size());
        }
        std::ostringstream js;
        js << "{\"finished\": " << (finished ? "true" : "false")
           << ", \"cycles\": " << top->cycles << ", \"error\": " << int(top->error)
           << ", \"error_code\": " << int(top->error_code) << ", \"counters\": [";
        std::vector<uint32_t> counters = words_of(top->counters);
        for (size_t i = 0; i < counters.size(); ++i) js << (i ? ", " : "") << counters[i];
        js << "], \"mem_reads\": " << top->mem_reads << ", \"mem_writes\": " << top->mem_writes
           << ", \"seconds\": " << seconds << "}\n";
        std::string text = js.str();
        write_file(job.out, reinterpret_cast<const uint8_t*>(text.data()), text.size());
        std::printf("done %zu\n", n);
        std::fflush(stdout);
    }
    top->final();
#if VM_COVERAGE
    if (!coverage.empty()) ctx->coveragep()->write(coverage.c_str());
#endif
#if VM_TRACE
    if (trace) trace->close();
#endif
    return 0;
}
