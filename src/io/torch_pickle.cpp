// A pickle interpreter for the subset torch.save writes (protocol 2, plus the protocol-4
// framing opcodes), building tensors from the archive's data/<key> records. Objects
// of classes it does not know become opaque values, so optimizer states, numpy
// scalars or argparse namespaces next to the weights do not stop the load.
#include "torch_pickle.hpp"

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>

#include <cstring>
#include <map>
#include <memory>
#include <unordered_map>

#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"

namespace retclip::io::detail {

namespace {

struct Obj;
using Ref = std::shared_ptr<Obj>;

struct Obj {
  enum Kind { kNone, kBool, kInt, kFloat, kStr, kBytes, kTuple, kList, kDict, kGlobal, kTensor, kOpaque };
  Kind kind = kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;                             // str, bytes, global name "module.name", opaque class
  std::vector<Ref> items;                    // tuple, list
  std::vector<std::pair<Ref, Ref>> entries;  // dict, in insertion order
  at::Tensor tensor;                         // tensor, or a storage (1-D, its dtype)
};

Ref make(Obj::Kind k) {
  auto o = std::make_shared<Obj>();
  o->kind = k;
  return o;
}

at::ScalarType storage_dtype(const std::string& global, const std::string& where) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble},
      {"torch.HalfStorage", at::kHalf},     {"torch.BFloat16Storage", at::kBFloat16},
      {"torch.LongStorage", at::kLong},     {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},     {"torch.BoolStorage", at::kBool},
  };
  auto it = kTypes.find(global);
  RETCLIP_CHECK_USAGE(it != kTypes.end(), where, ": tensor storage of type ", global,
                      " is not supported. HINT: convert the checkpoint to float32/float16/bfloat16 "
                      "or integer tensors in Python");
  return it->second;
}

class Unpickler {
 public:
  Unpickler(const RecordLoader& records, std::string where, const char* data, size_t size)
      : records_(records), where_(std::move(where)), p_(data), end_(data + size), begin_(data) {}

  Ref run() {
    while (true) {
      const unsigned char op = u8();
      switch (op) {
        case 0x80: u8(); break;                          // PROTO
        case 0x95: take(8); break;                       // FRAME
        case '.': return pop();                          // STOP
        case 'c': {                                      // GLOBAL
          auto g = make(Obj::kGlobal);
          std::string mod = line();
          g->s = mod + "." + line();
          push(g);
          break;
        }
        case 'q': memo_[u8()] = top(); break;            // BINPUT
        case 'r': memo_[u32()] = top(); break;           // LONG_BINPUT
        case 'p': memo_[std::stoull(line())] = top(); break;  // PUT
        case 0x94: memo_[memo_.size()] = top(); break;   // MEMOIZE
        case 'h': push(get(u8())); break;                // BINGET
        case 'j': push(get(u32())); break;               // LONG_BINGET
        case 'g': push(get(std::stoull(line()))); break; // GET
        case '}': push(make(Obj::kDict)); break;
        case ']': push(make(Obj::kList)); break;
        case ')': push(make(Obj::kTuple)); break;
        case '(': marks_.push_back(stack_.size()); break;
        case 'X': push(str(Obj::kStr, u32())); break;    // BINUNICODE
        case 0x8c: push(str(Obj::kStr, u8())); break;    // SHORT_BINUNICODE
        case 0x8d: push(str(Obj::kStr, u64())); break;   // BINUNICODE8
        case 'T': push(str(Obj::kStr, u32())); break;    // BINSTRING
        case 'U': push(str(Obj::kStr, u8())); break;     // SHORT_BINSTRING
        case 'B': push(str(Obj::kBytes, u32())); break;  // BINBYTES
        case 'C': push(str(Obj::kBytes, u8())); break;   // SHORT_BINBYTES
        case 'J': push(integer(static_cast<int32_t>(u32()))); break;
        case 'K': push(integer(u8())); break;
        case 'M': push(integer(u16())); break;
        case 0x8a: push(integer(long_le(u8()))); break;   // LONG1
        case 0x8b: push(integer(long_le(u32()))); break;  // LONG4
        case 'G': {                                      // BINFLOAT (big-endian)
          uint64_t b = 0;
          for (int k = 0; k < 8; ++k) b = (b << 8) | u8();
          auto o = make(Obj::kFloat);
          std::memcpy(&o->f, &b, 8);
          push(o);
          break;
        }
        case 'N': push(make(Obj::kNone)); break;
        case 0x88: case 0x89: {
          auto o = make(Obj::kBool);
          o->i = op == 0x88;
          push(o);
          break;
        }
        case 't': case 'l': {                            // TUPLE, LIST from mark
          auto o = make(op == 't' ? Obj::kTuple : Obj::kList);
          o->items = pop_mark();
          push(o);
          break;
        }
        case 0x85: case 0x86: case 0x87: {               // TUPLE1..3
          auto o = make(Obj::kTuple);
          o->items.resize(op - 0x84);
          for (size_t k = o->items.size(); k-- > 0;) o->items[k] = pop();
          push(o);
          break;
        }
        case 'd': {                                      // DICT from mark
          auto items = pop_mark();
          auto o = make(Obj::kDict);
          set_items(o, items);
          push(o);
          break;
        }
        case 'a': {                                      // APPEND
          auto v = pop();
          append(top(), {v});
          break;
        }
        case 'e': {                                      // APPENDS
          auto items = pop_mark();
          append(top(), items);
          break;
        }
        case 's': {                                      // SETITEM
          auto v = pop();
          auto k = pop();
          set_items(top(), {k, v});
          break;
        }
        case 'u': {                                      // SETITEMS
          auto items = pop_mark();
          set_items(top(), items);
          break;
        }
        case 'R': {                                      // REDUCE
          auto args = pop();
          auto fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 0x81: {                                     // NEWOBJ
          auto args = pop();
          auto cls = pop();
          push(reduce(cls, args));
          break;
        }
        case 'b': pop(); break;  // BUILD: object state (OrderedDict._metadata, ...) is not needed
        case 'Q': push(persistent(pop())); break;        // BINPERSID
        default:
          fail(fmt::format("unsupported pickle opcode 0x{:02x}", op));
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw UsageError(str_cat(where_, ": cannot read data.pkl at byte ", p_ - begin_, ": ", what,
                             ". HINT: re-save the weights as torch.save(model.state_dict(), path) or "
                             "as safetensors"));
  }
  const char* take(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) fail("the pickle ends early");
    const char* r = p_;
    p_ += n;
    return r;
  }
  uint64_t le(int n) {
    const auto* b = reinterpret_cast<const unsigned char*>(take(n));
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | b[k];
    return v;
  }
  unsigned u8() { return static_cast<unsigned>(le(1)); }
  unsigned u16() { return static_cast<unsigned>(le(2)); }
  uint32_t u32() { return static_cast<uint32_t>(le(4)); }
  uint64_t u64() { return le(8); }
  int64_t long_le(uint64_t n) {
    if (n > 8) fail(str_cat("integer of ", n, " bytes is too large"));
    const auto* b = reinterpret_cast<const unsigned char*>(take(n));
    if (n == 0) return 0;
    uint64_t v = 0;
    for (size_t k = n; k-- > 0;) v = (v << 8) | b[k];
    if (n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return static_cast<int64_t>(v);
  }
  std::string line() {
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', end_ - p_));
    if (!nl) fail("unterminated text field");
    std::string s(p_, nl);
    p_ = nl + 1;
    return s;
  }
  Ref str(Obj::Kind k, uint64_t n) {
    if (n > static_cast<uint64_t>(end_ - p_)) fail("a string runs past the end");
    auto o = make(k);
    o->s.assign(take(n), n);
    return o;
  }
  Ref integer(int64_t v) {
    auto o = make(Obj::kInt);
    o->i = v;
    return o;
  }
  void push(Ref r) { stack_.push_back(std::move(r)); }
  Ref pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("stack underflow");
    Ref r = std::move(stack_.back());
    stack_.pop_back();
    return r;
  }
  Ref& top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  Ref get(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail(str_cat("memo entry ", k, " is not defined"));
    return it->second;
  }
  std::vector<Ref> pop_mark() {
    if (marks_.empty()) fail("no mark on the stack");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  void append(const Ref& list, const std::vector<Ref>& items) {
    if (list->kind == Obj::kList) list->items.insert(list->items.end(), items.begin(), items.end());
    // appends to opaque objects (sets, deques) are dropped
  }
  void set_items(const Ref& dict, const std::vector<Ref>& kv) {
    if (kv.size() % 2) fail("odd number of dict items");
    if (dict->kind != Obj::kDict) return;  // opaque mapping types
    for (size_t k = 0; k < kv.size(); k += 2) {
      bool replaced = false;
      if (kv[k]->kind == Obj::kStr)
        for (auto& e : dict->entries)
          if (e.first->kind == Obj::kStr && e.first->s == kv[k]->s) {
            e.second = kv[k + 1];
            replaced = true;
          }
      if (!replaced) dict->entries.emplace_back(kv[k], kv[k + 1]);
    }
  }
  const Ref& arg(const Ref& args, size_t k, const std::string& fn) {
    if (args->kind != Obj::kTuple || args->items.size() <= k) fail(str_cat(fn, ": missing argument ", k));
    return args->items[k];
  }
  std::vector<int64_t> ints(const Ref& t, const std::string& fn) {
    if (t->kind != Obj::kTuple && t->kind != Obj::kList) fail(str_cat(fn, ": expected a tuple of ints"));
    std::vector<int64_t> v;
    for (const auto& x : t->items) {
      if (x->kind != Obj::kInt) fail(str_cat(fn, ": expected a tuple of ints"));
      v.push_back(x->i);
    }
    return v;
  }

  Ref reduce(const Ref& fn, const Ref& args) {
    const std::string name = fn->kind == Obj::kGlobal ? fn->s : std::string("<call>");
    if (name == "collections.OrderedDict" || name == "builtins.dict") {
      auto d = make(Obj::kDict);
      if (args->kind == Obj::kTuple && !args->items.empty() && args->items[0]->kind == Obj::kList)
        for (const auto& kv : args->items[0]->items)
          if (kv->kind == Obj::kTuple && kv->items.size() == 2) set_items(d, kv->items);
      return d;
    }
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      const Ref& st = arg(args, 0, name);
      if (st->kind != Obj::kTensor) fail(str_cat(name, ": first argument is not a storage"));
      const int64_t offset = arg(args, 1, name)->i;
      auto size = ints(arg(args, 2, name), name);
      auto stride = ints(arg(args, 3, name), name);
      if (size.size() != stride.size()) fail(str_cat(name, ": size and stride differ in length"));
      int64_t last = offset;
      bool empty = false;
      for (size_t k = 0; k < size.size(); ++k) {
        if (size[k] < 0 || stride[k] < 0) fail(str_cat(name, ": negative size or stride"));
        if (size[k] == 0) empty = true;
        int64_t span = 0;
        if (size[k] > 0 && (__builtin_mul_overflow(size[k] - 1, stride[k], &span) ||
                            __builtin_add_overflow(last, span, &last)))
          fail(str_cat(name, ": tensor extent overflows"));
      }
      const at::Tensor& storage = st->tensor;
      auto o = make(Obj::kTensor);
      if (empty) {
        o->tensor = at::empty(size, storage.options());
        return o;
      }
      if (offset < 0 || last >= storage.numel())
        fail(str_cat(name, ": tensor view [offset ", offset, ", last element ", last,
                     "] lies outside its storage of ", storage.numel(), " elements"));
      at::Tensor view = storage.as_strided(size, stride, offset);
      const bool whole = offset == 0 && view.is_contiguous() && view.numel() == storage.numel();
      o->tensor = whole ? view : view.clone(at::MemoryFormat::Contiguous);
      return o;
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      const Ref& data = arg(args, 0, name);
      if (data->kind != Obj::kTensor) fail(str_cat(name, ": first argument is not a tensor"));
      return data;
    }
    if (name.rfind("torch.jit._pickle.", 0) == 0 && args->kind == Obj::kTuple && !args->items.empty())
      return args->items[0];  // restore_type_tag / build_*list: the value itself
    auto o = make(Obj::kOpaque);
    o->s = name;
    return o;
  }

  Ref persistent(const Ref& pid) {
    // ('storage', <storage type>, key, location, numel)
    if (pid->kind != Obj::kTuple || pid->items.size() < 5 || pid->items[0]->s != "storage" ||
        pid->items[1]->kind != Obj::kGlobal || pid->items[2]->kind != Obj::kStr)
      fail("unexpected persistent id (expected a ('storage', type, key, location, numel) tuple)");
    const std::string& key = pid->items[2]->s;
    const at::ScalarType dtype = storage_dtype(pid->items[1]->s, where_);
    auto it = storages_.find(key);
    if (it == storages_.end()) {
      const std::string record = "data/" + key;
      const std::string bytes = records_(record);
      const size_t n = bytes.size();
      const size_t item = c10::elementSize(dtype);
      if (n % item) fail(str_cat("record ", record, " holds ", n, " bytes, not a multiple of ", item));
      at::Tensor t = at::empty({static_cast<int64_t>(n / item)}, at::TensorOptions().dtype(dtype));
      if (n) std::memcpy(t.data_ptr(), bytes.data(), n);
      it = storages_.emplace(key, t).first;
    }
    auto o = make(Obj::kTensor);
    o->tensor = it->second.scalar_type() == dtype ? it->second : it->second.view(dtype);
    return o;
  }

  const RecordLoader& records_;
  std::string where_;
  const char* p_;
  const char* end_;
  const char* begin_;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Ref> memo_;
  std::unordered_map<std::string, at::Tensor> storages_;
};

// "teacher": DINOv2 training checkpoints (the EMA tower RETFound-DINOv2 releases).
constexpr const char* kNestedKeys[] = {"state_dict", "model", "module", "model_state_dict",
                                       "teacher"};

void collect(const Ref& v, const std::string& where, StateDict* out, int depth) {
  RETCLIP_CHECK_USAGE(v->kind == Obj::kDict, where, ": expected a dict of tensors (a state_dict) at the top "
                      "level but found ", v->kind == Obj::kOpaque ? "an object of class " + v->s : "another value",
                      ". HINT: save model.state_dict(), not the model object");
  for (const char* nk : kNestedKeys)
    for (const auto& [k, val] : v->entries)
      if (k->kind == Obj::kStr && k->s == nk && val->kind == Obj::kDict && depth < 4) {
        log::debug("{}: using the nested \"{}\" entry", where, nk);
        collect(val, where, out, depth + 1);
        return;
      }
  std::string other;
  for (const auto& [k, val] : v->entries) {
    if (k->kind == Obj::kStr && val->kind == Obj::kTensor)
      out->emplace_back(k->s, val->tensor);
    else if (other.size() < 200)
      other += (other.empty() ? "" : ", ") + (k->kind == Obj::kStr ? k->s : std::string("<non-string key>"));
  }
  RETCLIP_CHECK_USAGE(!out->empty(), where, ": found no tensors; top-level keys: ", other,
                      ". HINT: retclip unwraps \"state_dict\", \"model\", \"module\" and "
                      "\"model_state_dict\"; re-save with torch.save(model.state_dict(), path)");
}

}  // namespace

StateDict unpickle_state_dict(std::string_view pickle, const RecordLoader& load_record,
                              const std::string& where) {
  try {
    Unpickler u(load_record, where, pickle.data(), pickle.size());
    StateDict sd;
    collect(u.run(), where, &sd, 0);
    return sd;
  } catch (const retclip::Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw UsageError(str_cat(where, ": cannot read the torch.save archive: ", e.what_without_backtrace(),
                             ". HINT: the file may be truncated or corrupt"));
  } catch (const std::exception& e) {  // e.g. a malformed text field in data.pkl
    throw UsageError(str_cat(where, ": cannot read the torch.save archive: ", e.what(),
                             ". HINT: the file may be truncated or corrupt"));
  }
}

StateDict load_torch_zip(const std::filesystem::path& path) {
  const std::string where = path.string();
  try {
    caffe2::serialize::PyTorchStreamReader zip(where);
    auto record = [&](const std::string& name) {
      RETCLIP_CHECK_USAGE(zip.hasRecord(name), where, ": record ", name, " is missing from the archive",
                          ". HINT: the file may be truncated or corrupt");
      auto [ptr, n] = zip.getRecord(name);
      return std::string(static_cast<const char*>(ptr.get()), n);
    };
    if (zip.hasRecord("byteorder"))
      RETCLIP_CHECK_USAGE(record("byteorder") == "little", where,
                          ": written on a big-endian machine. HINT: re-save it on a little-endian one");
    RETCLIP_CHECK_USAGE(zip.hasRecord("data.pkl"), where, ": the archive has no data.pkl");
    return unpickle_state_dict(record("data.pkl"), record, where);
  } catch (const retclip::Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw UsageError(str_cat(where, ": cannot read the torch.save archive: ", e.what_without_backtrace(),
                             ". HINT: the file may be truncated or corrupt"));
  }
}

}  // namespace retclip::io::detail
