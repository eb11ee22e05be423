/*
 * A stand-in vmcompute.dll for running tshim's Windows backend under Wine, where there is no Host
 * Compute Service. Same exports, same ABI (x64, HRESULT = int32, UTF-16 strings, CoTaskMemAlloc'd
 * result documents), and HCS-like behaviour with state:
 *
 * - compute systems (created -> running <-> paused -> stopped) whose Create/Start/Pause/Resume
 *   return 0xC0370103 (pending) and complete through notifications sent from threads of their own,
 *   which wait until a callback is registered on that handle (HCS does not drop them either);
 * - HcsCreateProcess really runs the CommandLine with CreateProcessW inside Wine and returns the
 *   parent ends of its stdio pipes in HCS_PROCESS_INFORMATION; a thread per process waits for it
 *   and sends ProcessExited; Shutdown/Terminate kill a system's processes and send SystemExited;
 * - HcsUnregister*Callback waits for callbacks in flight, as the real one does;
 * - layer calls are recorded and a wrong order is refused (ERROR_INVALID_STATE);
 * - any export can be made to fail: a line "ExportName 0xHRESULT" in $TSHIM_FAKE_HCS_DIR/fail
 *   fails the next call of that export once (the line is consumed).
 *
 * Every call is appended to $TSHIM_FAKE_HCS_DIR/calls.log; the configuration documents it was
 * given are written to <dir>/<id>.create.json and <dir>/<id>.process.<n>.json.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o vmcompute.dll fake-vmcompute.c -lole32
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <objbase.h>
#include <stdint.h>
#include <stdio.h>
#include <wchar.h>

#define EXPORT __declspec(dllexport)
typedef int32_t HR;
typedef void(__stdcall *NOTIFY)(uint32_t type, void *context, int32_t status, const wchar_t *data);

#define HR_PENDING ((HR)0xC0370103)
#define HR_NOT_FOUND ((HR)0xC037010E)
#define HR_ALREADY_STOPPED ((HR)0xC0370110)
#define HR_INVALID_STATE ((HR)0xC0370105)
#define HR_PROCESS_STOPPED ((HR)0x8037011F)
#define HR_WIN32_INVALID_STATE ((HR)0x8007139F)
#define HR_INVALID_ARG ((HR)0x80070057)

#define N_SYSTEM_EXITED 0x1
#define N_CREATE_COMPLETED 0x2
#define N_START_COMPLETED 0x3
#define N_PAUSE_COMPLETED 0x4
#define N_RESUME_COMPLETED 0x5
#define N_PROCESS_EXITED 0x10000

enum { S_CREATED, S_RUNNING, S_PAUSED, S_STOPPED };
static const char *STATE_NAMES[] = {"Created", "Running", "Paused", "Stopped"};

#define MAX_SYSTEMS 64
#define MAX_PROCS 256
#define MAX_HANDLES 512
#define MAX_LAYERS 64

typedef struct {
  int used;
  wchar_t id[260];
  int state;
  int processCount;
} System;

typedef struct {
  int used;
  int system;
  DWORD pid;
  HANDLE process;
  HANDLE thread; /* the main thread, suspended while its system is paused */
  int exited;
  DWORD exitCode;
  wchar_t image[260];
} Proc;

/* A handle: to a system or to a process; carries at most one callback registration. */
typedef struct {
  int used;
  int kind; /* 1 system, 2 process */
  int index;
  int closed;
  NOTIFY callback;
  void *context;
  volatile LONG inFlight;
  int callbackRegistered;
} Handle;

typedef struct {
  int used;
  wchar_t path[520];
  int state; /* 0 none, 1 activated, 2 prepared */
} Layer;

static CRITICAL_SECTION lock;
static System systems[MAX_SYSTEMS];
static Proc procs[MAX_PROCS];
static Handle handles[MAX_HANDLES];
static Layer layers[MAX_LAYERS];
static int processDocs;
/* Every process we start is in this job, which dies with us: a v2 container dies with its shim. */
static HANDLE job;

BOOL WINAPI DllMain(HINSTANCE h, DWORD reason, LPVOID r) {
  (void)h;
  (void)r;
  if (reason == DLL_PROCESS_ATTACH) InitializeCriticalSection(&lock);
  return TRUE;
}

/* ---------- control directory: call log, documents, injected failures ---------- */

static int controlPath(char *out, size_t size, const char *name) {
  char dir[MAX_PATH];
  DWORD n = GetEnvironmentVariableA("TSHIM_FAKE_HCS_DIR", dir, sizeof dir);
  if (n == 0 || n >= sizeof dir) return 0;
  snprintf(out, size, "%s\\%s", dir, name);
  return 1;
}

static void utf8(const wchar_t *w, char *out, int size) {
  if (!w) {
    out[0] = 0;
    return;
  }
  int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, out, size, NULL, NULL);
  if (n <= 0) out[0] = 0;
}

static void logCall(const char *fmt, ...) {
  char path[MAX_PATH + 32];
  if (!controlPath(path, sizeof path, "calls.log")) return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  EnterCriticalSection(&lock);
  FILE *f = fopen(path, "ab");
  if (f) {
    fprintf(f, "%s\n", line);
    fclose(f);
  }
  LeaveCriticalSection(&lock);
}

static void saveDocument(const char *name, const wchar_t *doc) {
  char path[MAX_PATH + 300];
  if (!controlPath(path, sizeof path, name)) return;
  int n = WideCharToMultiByte(CP_UTF8, 0, doc, -1, NULL, 0, NULL, NULL);
  char *buf = (char *)malloc(n > 0 ? n : 1);
  if (!buf) return;
  WideCharToMultiByte(CP_UTF8, 0, doc, -1, buf, n, NULL, NULL);
  FILE *f = fopen(path, "wb");
  if (f) {
    fputs(buf, f);
    fclose(f);
  }
  free(buf);
}

/* Consumes the first "Export 0xHR" line naming `name` from the fail file; 0 when none. */
static HR injected(const char *name) {
  char path[MAX_PATH + 32];
  if (!controlPath(path, sizeof path, "fail")) return 0;
  HR result = 0;
  EnterCriticalSection(&lock);
  FILE *f = fopen(path, "rb");
  if (f) {
    char content[8192];
    size_t len = fread(content, 1, sizeof content - 1, f);
    fclose(f);
    content[len] = 0;
    char kept[8192];
    kept[0] = 0;
    char *save = NULL;
    for (char *line = strtok_r(content, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
      char export_[128];
      unsigned long hr;
      if (!result && sscanf(line, "%127s %lx", export_, &hr) == 2 && strcmp(export_, name) == 0) {
        result = (HR)(uint32_t)hr;
        continue;
      }
      strncat(kept, line, sizeof kept - strlen(kept) - 2);
      strcat(kept, "\n");
    }
    if (result) {
      f = fopen(path, "wb");
      if (f) {
        fputs(kept, f);
        fclose(f);
      }
    }
  }
  LeaveCriticalSection(&lock);
  if (result) logCall("%s -> injected 0x%08lx", name, (unsigned long)(uint32_t)result);
  return result;
}

#define FAIL_IF_INJECTED(name)   \
  do {                           \
    HR inj_ = injected(name);    \
    if (inj_) return inj_;       \
  } while (0)

/* ---------- strings the caller frees with CoTaskMemFree ---------- */

static wchar_t *dupWide(const char *text) {
  int n = MultiByteToWideChar(CP_UTF8, 0, text, -1, NULL, 0);
  wchar_t *w = (wchar_t *)CoTaskMemAlloc(n * sizeof(wchar_t));
  if (w) MultiByteToWideChar(CP_UTF8, 0, text, -1, w, n);
  return w;
}

static HR errorResult(wchar_t **result, HR hr, const char *message) {
  if (result) {
    char doc[600];
    snprintf(doc, sizeof doc, "{\"Error\":%ld,\"ErrorMessage\":\"%s\",\"ErrorEvents\":[{\"Message\":\"fake HCS: %s\"}]}", (long)hr, message, message);
    *result = dupWide(doc);
  }
  return hr;
}

/* ---------- a tiny JSON reader for the documents we are given ---------- */

/* Finds "key" and returns a pointer just after its ':' (whitespace skipped), or NULL. */
static const wchar_t *jsonFind(const wchar_t *doc, const wchar_t *key) {
  if (!doc) return NULL;
  size_t klen = wcslen(key);
  for (const wchar_t *p = doc; *p; p++) {
    if (*p == L'"' && wcsncmp(p + 1, key, klen) == 0 && p[1 + klen] == L'"') {
      const wchar_t *q = p + 2 + klen;
      while (*q == L' ' || *q == L'\t' || *q == L'\r' || *q == L'\n') q++;
      if (*q != L':') continue;
      q++;
      while (*q == L' ' || *q == L'\t' || *q == L'\r' || *q == L'\n') q++;
      return q;
    }
  }
  return NULL;
}

/* Reads a JSON string at p (which points at '"') into out; returns the position after it. */
static const wchar_t *jsonString(const wchar_t *p, wchar_t *out, size_t size) {
  size_t n = 0;
  if (!p || *p != L'"') {
    if (size) out[0] = 0;
    return p;
  }
  p++;
  while (*p && *p != L'"') {
    wchar_t c = *p++;
    if (c == L'\\' && *p) {
      wchar_t e = *p++;
      switch (e) {
        case L'n': c = L'\n'; break;
        case L't': c = L'\t'; break;
        case L'r': c = L'\r'; break;
        case L'b': c = L'\b'; break;
        case L'f': c = L'\f'; break;
        case L'u': {
          wchar_t hex[5] = {0};
          for (int i = 0; i < 4 && *p; i++) hex[i] = *p++;
          c = (wchar_t)wcstoul(hex, NULL, 16);
          break;
        }
        default: c = e;
      }
    }
    if (n + 1 < size) out[n++] = c;
  }
  if (size) out[n] = 0;
  return *p == L'"' ? p + 1 : p;
}

static int jsonBool(const wchar_t *doc, const wchar_t *key) {
  const wchar_t *v = jsonFind(doc, key);
  return v && wcsncmp(v, L"true", 4) == 0;
}

static int jsonStringField(const wchar_t *doc, const wchar_t *key, wchar_t *out, size_t size) {
  const wchar_t *v = jsonFind(doc, key);
  if (!v || *v != L'"') {
    out[0] = 0;
    return 0;
  }
  jsonString(v, out, size);
  return 1;
}

/* ---------- handles and notifications ---------- */

static Handle *handleOf(void *h, int kind) {
  uintptr_t i = (uintptr_t)h;
  if (i == 0 || i > MAX_HANDLES) return NULL;
  Handle *hd = &handles[i - 1];
  if (!hd->used || hd->kind != kind) return NULL;
  return hd;
}

static void *newHandle(int kind, int index) {
  for (int i = 0; i < MAX_HANDLES; i++) {
    if (!handles[i].used) {
      memset(&handles[i], 0, sizeof handles[i]);
      handles[i].used = 1;
      handles[i].kind = kind;
      handles[i].index = index;
      return (void *)(uintptr_t)(i + 1);
    }
  }
  return NULL;
}

typedef struct {
  int handle; /* index into handles, -1: every open handle of (kind, index) */
  int kind;
  int index;
  uint32_t type;
  HR status;
} Delivery;

/* Calls one handle's callback, counted as in flight so Unregister can wait for it. */
static int callHandle(int h, uint32_t type, HR status) {
  NOTIFY cb;
  void *ctx;
  EnterCriticalSection(&lock);
  Handle *hd = &handles[h];
  if (!hd->used || hd->closed || !hd->callback) {
    LeaveCriticalSection(&lock);
    return 0;
  }
  cb = hd->callback;
  ctx = hd->context;
  InterlockedIncrement(&hd->inFlight);
  LeaveCriticalSection(&lock);
  cb(type, ctx, status, L"");
  InterlockedDecrement(&hd->inFlight);
  return 1;
}

static DWORD WINAPI deliverThread(LPVOID arg) {
  Delivery d = *(Delivery *)arg;
  free(arg);
  Sleep(2);
  if (d.handle >= 0) {
    /* A completion: wait until the caller registered its callback on this handle. */
    for (int i = 0; i < 120000; i++) {
      EnterCriticalSection(&lock);
      int ready = handles[d.handle].used && handles[d.handle].callback != NULL;
      int gone = !handles[d.handle].used || handles[d.handle].closed;
      LeaveCriticalSection(&lock);
      if (ready || gone) break;
      Sleep(1);
    }
    callHandle(d.handle, d.type, d.status);
    return 0;
  }
  /* An exit: every handle to the object that has (or gets, shortly) a callback hears it. */
  for (int attempt = 0; attempt < 2000; attempt++) {
    int pending = 0;
    for (int h = 0; h < MAX_HANDLES; h++) {
      EnterCriticalSection(&lock);
      Handle *hd = &handles[h];
      int match = hd->used && !hd->closed && hd->kind == d.kind && hd->index == d.index;
      int registered = match && hd->callback != NULL;
      int done = match && (hd->callbackRegistered & (int)(d.type == N_SYSTEM_EXITED ? 2 : 4));
      if (registered && !done) hd->callbackRegistered |= (d.type == N_SYSTEM_EXITED ? 2 : 4);
      if (match && !registered) pending = 1;
      LeaveCriticalSection(&lock);
      if (registered && !done) callHandle(h, d.type, d.status);
    }
    if (!pending) break;
    Sleep(1);
  }
  return 0;
}

static void deliver(int handleIndex, int kind, int index, uint32_t type, HR status) {
  Delivery *d = (Delivery *)malloc(sizeof *d);
  d->handle = handleIndex;
  d->kind = kind;
  d->index = index;
  d->type = type;
  d->status = status;
  HANDLE t = CreateThread(NULL, 0, deliverThread, d, 0, NULL);
  if (t) CloseHandle(t);
}

static int findSystem(const wchar_t *id) {
  for (int i = 0; i < MAX_SYSTEMS; i++)
    if (systems[i].used && wcscmp(systems[i].id, id) == 0) return i;
  return -1;
}

/* ---------- processes ---------- */

static DWORD WINAPI waitProcessThread(LPVOID arg) {
  int p = (int)(intptr_t)arg;
  WaitForSingleObject(procs[p].process, INFINITE);
  DWORD code = 0;
  GetExitCodeProcess(procs[p].process, &code);
  EnterCriticalSection(&lock);
  procs[p].exited = 1;
  procs[p].exitCode = code;
  LeaveCriticalSection(&lock);
  logCall("process %lu exited %lu", (unsigned long)procs[p].pid, (unsigned long)code);
  deliver(-1, 2, p, N_PROCESS_EXITED, 0);
  return 0;
}

static void stopSystem(int s, uint32_t exitCodeForProcesses) {
  EnterCriticalSection(&lock);
  if (systems[s].state == S_STOPPED) {
    LeaveCriticalSection(&lock);
    return;
  }
  systems[s].state = S_STOPPED;
  LeaveCriticalSection(&lock);
  for (int p = 0; p < MAX_PROCS; p++) {
    if (procs[p].used && procs[p].system == s && !procs[p].exited) TerminateProcess(procs[p].process, exitCodeForProcesses);
  }
  /* processes report their exits first, as HCS orders them */
  for (int p = 0; p < MAX_PROCS; p++) {
    if (procs[p].used && procs[p].system == s) {
      while (!procs[p].exited) Sleep(1);
    }
  }
  deliver(-1, 1, s, N_SYSTEM_EXITED, 0);
}

static DWORD WINAPI stopThread(LPVOID arg) {
  stopSystem((int)(intptr_t)arg, 1);
  return 0;
}

/* ---------- compute system exports ---------- */

EXPORT HR __stdcall HcsEnumerateComputeSystems(const wchar_t *query, wchar_t **computeSystems, wchar_t **result) {
  (void)query;
  FAIL_IF_INJECTED("HcsEnumerateComputeSystems");
  if (result) *result = NULL;
  *computeSystems = dupWide("[]");
  return 0;
}

EXPORT HR __stdcall HcsCreateComputeSystem(const wchar_t *id, const wchar_t *configuration, void *identity, void **computeSystem, wchar_t **result) {
  (void)identity;
  char id8[300];
  utf8(id, id8, sizeof id8);
  logCall("HcsCreateComputeSystem %s", id8);
  *computeSystem = NULL;
  if (result) *result = NULL;
  FAIL_IF_INJECTED("HcsCreateComputeSystem");
  if (!id || !*id || !configuration || !jsonFind(configuration, L"SchemaVersion")) return errorResult(result, (HR)0xC037010D, "invalid JSON document");
  char name[340];
  snprintf(name, sizeof name, "%s.create.json", id8);
  saveDocument(name, configuration);
  EnterCriticalSection(&lock);
  if (findSystem(id) >= 0) {
    LeaveCriticalSection(&lock);
    return errorResult(result, (HR)0xC037010F, "a compute system with this id already exists");
  }
  int s = -1;
  for (int i = 0; i < MAX_SYSTEMS; i++)
    if (!systems[i].used) {
      s = i;
      break;
    }
  if (s < 0) {
    LeaveCriticalSection(&lock);
    return errorResult(result, (HR)0x8007000E, "too many systems");
  }
  memset(&systems[s], 0, sizeof systems[s]);
  systems[s].used = 1;
  wcsncpy(systems[s].id, id, 259);
  systems[s].state = S_CREATED;
  void *h = newHandle(1, s);
  LeaveCriticalSection(&lock);
  *computeSystem = h;
  deliver((int)(uintptr_t)h - 1, 1, s, N_CREATE_COMPLETED, 0);
  return HR_PENDING;
}

EXPORT HR __stdcall HcsOpenComputeSystem(const wchar_t *id, void **computeSystem, wchar_t **result) {
  char id8[300];
  utf8(id, id8, sizeof id8);
  logCall("HcsOpenComputeSystem %s", id8);
  *computeSystem = NULL;
  if (result) *result = NULL;
  FAIL_IF_INJECTED("HcsOpenComputeSystem");
  EnterCriticalSection(&lock);
  int s = findSystem(id);
  void *h = s >= 0 ? newHandle(1, s) : NULL;
  LeaveCriticalSection(&lock);
  if (s < 0) return errorResult(result, HR_NOT_FOUND, "a compute system with the given identifier does not exist");
  *computeSystem = h;
  return 0;
}

EXPORT HR __stdcall HcsCloseComputeSystem(void *computeSystem) {
  logCall("HcsCloseComputeSystem");
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(computeSystem, 1);
  if (!hd) {
    LeaveCriticalSection(&lock);
    return (HR)0x80070006;
  }
  int s = hd->index;
  hd->closed = 1;
  hd->used = 0;
  /* the last handle of a stopped system forgets it */
  int open = 0;
  for (int i = 0; i < MAX_HANDLES; i++)
    if (handles[i].used && handles[i].kind == 1 && handles[i].index == s) open = 1;
  if (!open && systems[s].state == S_STOPPED) systems[s].used = 0;
  LeaveCriticalSection(&lock);
  return 0;
}

/* `before` runs (outside the lock) after the state changed and before the completion is sent. */
static HR transition(void *computeSystem, const char *op, int from, int to, uint32_t completion, void (*before)(int system), wchar_t **result) {
  if (result) *result = NULL;
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(computeSystem, 1);
  if (!hd) {
    LeaveCriticalSection(&lock);
    return (HR)0x80070006;
  }
  int s = hd->index;
  if (systems[s].state != from) {
    int st = systems[s].state;
    LeaveCriticalSection(&lock);
    logCall("%s refused in state %s", op, STATE_NAMES[st]);
    return errorResult(result, HR_INVALID_STATE, "invalid state for this operation");
  }
  systems[s].state = to;
  int hi = (int)(uintptr_t)computeSystem - 1;
  LeaveCriticalSection(&lock);
  if (before) before(s);
  deliver(hi, 1, s, completion, 0);
  return HR_PENDING;
}

EXPORT HR __stdcall HcsStartComputeSystem(void *computeSystem, const wchar_t *options, wchar_t **result) {
  (void)options;
  logCall("HcsStartComputeSystem");
  FAIL_IF_INJECTED("HcsStartComputeSystem");
  return transition(computeSystem, "start", S_CREATED, S_RUNNING, N_START_COMPLETED, NULL, result);
}

/* Pausing freezes the system's processes as HCS freezes a silo: their main threads are suspended. */
static void freeze(int s, int suspend) {
  int frozen = 0;
  EnterCriticalSection(&lock);
  for (int i = 0; i < MAX_PROCS; i++) {
    if (!procs[i].used || procs[i].system != s || procs[i].exited || !procs[i].thread) continue;
    DWORD r = suspend ? SuspendThread(procs[i].thread) : ResumeThread(procs[i].thread);
    if (r != (DWORD)-1) frozen++;
  }
  LeaveCriticalSection(&lock);
  logCall("%s %d processes", suspend ? "froze" : "thawed", frozen);
}

static void suspendAll(int s) { freeze(s, 1); }
static void resumeAll(int s) { freeze(s, 0); }

EXPORT HR __stdcall HcsPauseComputeSystem(void *computeSystem, const wchar_t *options, wchar_t **result) {
  (void)options;
  logCall("HcsPauseComputeSystem");
  FAIL_IF_INJECTED("HcsPauseComputeSystem");
  return transition(computeSystem, "pause", S_RUNNING, S_PAUSED, N_PAUSE_COMPLETED, suspendAll, result);
}

EXPORT HR __stdcall HcsResumeComputeSystem(void *computeSystem, const wchar_t *options, wchar_t **result) {
  (void)options;
  logCall("HcsResumeComputeSystem");
  FAIL_IF_INJECTED("HcsResumeComputeSystem");
  return transition(computeSystem, "resume", S_PAUSED, S_RUNNING, N_RESUME_COMPLETED, resumeAll, result);
}

static HR stop(void *computeSystem, const char *op, wchar_t **result) {
  if (result) *result = NULL;
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(computeSystem, 1);
  if (!hd) {
    LeaveCriticalSection(&lock);
    return (HR)0x80070006;
  }
  int s = hd->index;
  int state = systems[s].state;
  LeaveCriticalSection(&lock);
  logCall("%s %s", op, STATE_NAMES[state]);
  if (state == S_STOPPED) return HR_ALREADY_STOPPED;
  HANDLE t = CreateThread(NULL, 0, stopThread, (LPVOID)(intptr_t)s, 0, NULL);
  if (t) CloseHandle(t);
  return HR_PENDING;
}

EXPORT HR __stdcall HcsShutdownComputeSystem(void *computeSystem, const wchar_t *options, wchar_t **result) {
  (void)options;
  FAIL_IF_INJECTED("HcsShutdownComputeSystem");
  return stop(computeSystem, "HcsShutdownComputeSystem", result);
}

EXPORT HR __stdcall HcsTerminateComputeSystem(void *computeSystem, const wchar_t *options, wchar_t **result) {
  (void)options;
  FAIL_IF_INJECTED("HcsTerminateComputeSystem");
  return stop(computeSystem, "HcsTerminateComputeSystem", result);
}

static void appendf(char *buf, size_t size, const char *fmt, ...) {
  size_t len = strlen(buf);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + len, size - len, fmt, ap);
  va_end(ap);
}

EXPORT HR __stdcall HcsGetComputeSystemProperties(void *computeSystem, const wchar_t *propertyQuery, wchar_t **properties, wchar_t **result) {
  *properties = NULL;
  if (result) *result = NULL;
  char q[512];
  utf8(propertyQuery, q, sizeof q);
  logCall("HcsGetComputeSystemProperties %s", q);
  FAIL_IF_INJECTED("HcsGetComputeSystemProperties");
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(computeSystem, 1);
  if (!hd) {
    LeaveCriticalSection(&lock);
    return (HR)0x80070006;
  }
  int s = hd->index;
  static char doc[16384];
  char id8[300];
  utf8(systems[s].id, id8, sizeof id8);
  snprintf(doc, sizeof doc, "{\"Id\":\"%s\",\"SystemType\":\"Container\",\"RuntimeOsType\":\"windows\",\"Owner\":\"fake\",\"State\":\"%s\"", id8, STATE_NAMES[systems[s].state]);
  if (strstr(q, "Statistics")) {
    appendf(doc, sizeof doc,
            ",\"Statistics\":{\"Timestamp\":\"2026-12-01T10:00:02Z\",\"ContainerStartTime\":\"2026-12-01T10:00:00Z\",\"Uptime100ns\":20000000,"
            "\"Processor\":{\"TotalRuntime100ns\":1500,\"RuntimeUser100ns\":1000,\"RuntimeKernel100ns\":500},"
            "\"Memory\":{\"MemoryUsageCommitBytes\":4096,\"MemoryUsageCommitPeakBytes\":8192,\"MemoryUsagePrivateWorkingSetBytes\":2048},"
            "\"Storage\":{\"ReadCountNormalized\":3,\"ReadSizeBytes\":300,\"WriteCountNormalized\":4,\"WriteSizeBytes\":400}}");
  }
  if (strstr(q, "ProcessList")) {
    appendf(doc, sizeof doc, ",\"ProcessList\":[");
    int first = 1;
    for (int p = 0; p < MAX_PROCS; p++) {
      if (!procs[p].used || procs[p].system != s || procs[p].exited) continue;
      char image[300];
      utf8(procs[p].image, image, sizeof image);
      appendf(doc, sizeof doc,
              "%s{\"ProcessId\":%lu,\"ImageName\":\"%s\",\"CreateTimestamp\":\"2026-12-01T10:00:01Z\",\"UserTime100ns\":10,\"KernelTime100ns\":20,"
              "\"MemoryCommitBytes\":30,\"MemoryWorkingSetPrivateBytes\":40,\"MemoryWorkingSetSharedBytes\":50}",
              first ? "" : ",", (unsigned long)procs[p].pid, image);
      first = 0;
    }
    appendf(doc, sizeof doc, "]");
  }
  appendf(doc, sizeof doc, "}");
  *properties = dupWide(doc);
  LeaveCriticalSection(&lock);
  return 0;
}

EXPORT HR __stdcall HcsModifyComputeSystem(void *computeSystem, const wchar_t *configuration, wchar_t **result) {
  if (result) *result = NULL;
  char c[1024];
  utf8(configuration, c, sizeof c);
  logCall("HcsModifyComputeSystem %s", c);
  FAIL_IF_INJECTED("HcsModifyComputeSystem");
  if (!handleOf(computeSystem, 1)) return (HR)0x80070006;
  return 0;
}

static HR registerCallback(void *object, int kind, NOTIFY callback, void *context, void **callbackHandle) {
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(object, kind);
  if (!hd || hd->callback) {
    LeaveCriticalSection(&lock);
    return hd ? (HR)0x80370119 : (HR)0x80070006;
  }
  hd->callback = callback;
  hd->context = context;
  LeaveCriticalSection(&lock);
  *callbackHandle = object; /* the callback handle is the object handle: one registration each */
  return 0;
}

/* Waits for callbacks in flight on that handle to return: the real one does too (spec §2.4). */
static HR unregisterCallback(void *callbackHandle, int kind) {
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(callbackHandle, kind);
  if (!hd) {
    LeaveCriticalSection(&lock);
    return (HR)0x80070006;
  }
  hd->callback = NULL;
  LeaveCriticalSection(&lock);
  while (hd->inFlight > 0) Sleep(1);
  return 0;
}

EXPORT HR __stdcall HcsRegisterComputeSystemCallback(void *computeSystem, NOTIFY callback, void *context, void **callbackHandle) {
  logCall("HcsRegisterComputeSystemCallback");
  FAIL_IF_INJECTED("HcsRegisterComputeSystemCallback");
  return registerCallback(computeSystem, 1, callback, context, callbackHandle);
}

EXPORT HR __stdcall HcsUnregisterComputeSystemCallback(void *callbackHandle) {
  logCall("HcsUnregisterComputeSystemCallback");
  return unregisterCallback(callbackHandle, 1);
}

/* ---------- process exports ---------- */

typedef struct {
  DWORD ProcessId;
  DWORD Reserved;
  HANDLE StdInput;
  HANDLE StdOutput;
  HANDLE StdError;
} HCS_PROCESS_INFORMATION;

/* Environment object → a sorted-enough UTF-16 environment block (inherits PATH and SystemRoot). */
static wchar_t *environmentBlock(const wchar_t *doc) {
  const wchar_t *p = jsonFind(doc, L"Environment");
  size_t cap = 32768, len = 0;
  wchar_t *block = (wchar_t *)calloc(cap, sizeof(wchar_t));
  const wchar_t *keep[] = {L"SystemRoot", L"PATH", L"TEMP", L"WINEPREFIX", NULL};
  for (int i = 0; keep[i]; i++) {
    wchar_t value[4096];
    DWORD n = GetEnvironmentVariableW(keep[i], value, 4096);
    if (n == 0 || n >= 4096) continue;
    len += swprintf(block + len, cap - len, L"%ls=%ls", keep[i], value) + 1;
  }
  if (p && *p == L'{') {
    p++;
    for (;;) {
      while (*p == L' ' || *p == L',' || *p == L'\n' || *p == L'\r' || *p == L'\t') p++;
      if (*p != L'"') break;
      wchar_t key[1024], value[4096];
      p = jsonString(p, key, 1024);
      while (*p == L' ' || *p == L':') p++;
      p = jsonString(p, value, 4096);
      if (len + wcslen(key) + wcslen(value) + 3 < cap) len += swprintf(block + len, cap - len, L"%ls=%ls", key, value) + 1;
    }
  }
  block[len] = 0;
  return block;
}

EXPORT HR __stdcall HcsCreateProcess(void *computeSystem, const wchar_t *processParameters, HCS_PROCESS_INFORMATION *info, void **process, wchar_t **result) {
  *process = NULL;
  if (result) *result = NULL;
  memset(info, 0, sizeof *info);
  logCall("HcsCreateProcess");
  FAIL_IF_INJECTED("HcsCreateProcess");
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(computeSystem, 1);
  int s = hd ? hd->index : -1;
  int state = s >= 0 ? systems[s].state : -1;
  int n = processDocs++;
  LeaveCriticalSection(&lock);
  if (s < 0) return (HR)0x80070006;
  if (state != S_RUNNING) return errorResult(result, HR_INVALID_STATE, "the compute system is not running");
  char id8[300], name[360];
  utf8(systems[s].id, id8, sizeof id8);
  snprintf(name, sizeof name, "%s.process.%d.json", id8, n);
  saveDocument(name, processParameters);

  wchar_t commandLine[8192], cwd[1024];
  if (!jsonStringField(processParameters, L"CommandLine", commandLine, 8192) || !commandLine[0]) return errorResult(result, (HR)0xC037010D, "no CommandLine");
  jsonStringField(processParameters, L"WorkingDirectory", cwd, 1024);
  int wantIn = jsonBool(processParameters, L"CreateStdInPipe");
  int wantOut = jsonBool(processParameters, L"CreateStdOutPipe");
  int wantErr = jsonBool(processParameters, L"CreateStdErrPipe") && !jsonBool(processParameters, L"EmulateConsole");

  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE inR = NULL, inW = NULL, outR = NULL, outW = NULL, errR = NULL, errW = NULL;
  HANDLE nul = CreateFileW(L"NUL", GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, &sa, OPEN_EXISTING, 0, NULL);
  if (wantIn) {
    CreatePipe(&inR, &inW, &sa, 0);
    SetHandleInformation(inW, HANDLE_FLAG_INHERIT, 0);
  }
  if (wantOut) {
    CreatePipe(&outR, &outW, &sa, 0);
    SetHandleInformation(outR, HANDLE_FLAG_INHERIT, 0);
  }
  if (wantErr) {
    CreatePipe(&errR, &errW, &sa, 0);
    SetHandleInformation(errR, HANDLE_FLAG_INHERIT, 0);
  }
  STARTUPINFOW si;
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = wantIn ? inR : nul;
  si.hStdOutput = wantOut ? outW : nul;
  si.hStdError = wantErr ? errW : (wantOut && jsonBool(processParameters, L"EmulateConsole") ? outW : nul);
  PROCESS_INFORMATION pi;
  wchar_t *env = environmentBlock(processParameters);
  BOOL ok = CreateProcessW(NULL, commandLine, NULL, NULL, TRUE, CREATE_UNICODE_ENVIRONMENT | CREATE_NO_WINDOW, env, cwd[0] ? cwd : NULL, &si, &pi);
  DWORD err = GetLastError();
  free(env);
  if (inR) CloseHandle(inR);
  if (outW) CloseHandle(outW);
  if (errW) CloseHandle(errW);
  CloseHandle(nul);
  if (!ok) {
    if (inW) CloseHandle(inW);
    if (outR) CloseHandle(outR);
    if (errR) CloseHandle(errR);
    logCall("CreateProcessW failed %lu", (unsigned long)err);
    return errorResult(result, (HR)(0x80070000 | (err & 0xFFFF)), "the process could not be started");
  }
  if (!job) {
    job = CreateJobObjectW(NULL, NULL);
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits;
    memset(&limits, 0, sizeof limits);
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    if (job) SetInformationJobObject(job, JobObjectExtendedLimitInformation, &limits, sizeof limits);
  }
  if (job) AssignProcessToJobObject(job, pi.hProcess);
  EnterCriticalSection(&lock);
  int p = -1;
  for (int i = 0; i < MAX_PROCS; i++)
    if (!procs[i].used) {
      p = i;
      break;
    }
  memset(&procs[p], 0, sizeof procs[p]);
  procs[p].used = 1;
  procs[p].system = s;
  procs[p].pid = pi.dwProcessId;
  procs[p].process = pi.hProcess;
  procs[p].thread = pi.hThread;
  wcsncpy(procs[p].image, commandLine, 259);
  for (wchar_t *c = procs[p].image; *c; c++)
    if (*c == L' ') {
      *c = 0;
      break;
    }
  for (wchar_t *c = procs[p].image; *c; c++)
    if (*c == L'\\' || *c == L'"') *c = L'/';
  *process = newHandle(2, p);
  LeaveCriticalSection(&lock);
  info->ProcessId = pi.dwProcessId;
  info->StdInput = inW;
  info->StdOutput = outR;
  info->StdError = errR;
  logCall("process %lu started in %s", (unsigned long)pi.dwProcessId, id8);
  HANDLE t = CreateThread(NULL, 0, waitProcessThread, (LPVOID)(intptr_t)p, 0, NULL);
  if (t) CloseHandle(t);
  return 0;
}

EXPORT HR __stdcall HcsOpenProcess(void *computeSystem, uint32_t pid, void **process, wchar_t **result) {
  *process = NULL;
  if (result) *result = NULL;
  logCall("HcsOpenProcess %lu", (unsigned long)pid);
  FAIL_IF_INJECTED("HcsOpenProcess");
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(computeSystem, 1);
  int found = -1;
  for (int p = 0; hd && p < MAX_PROCS; p++)
    if (procs[p].used && procs[p].system == hd->index && procs[p].pid == pid && !procs[p].exited) found = p;
  if (found >= 0) *process = newHandle(2, found);
  LeaveCriticalSection(&lock);
  if (!hd) return (HR)0x80070006;
  if (found < 0) return errorResult(result, (HR)0x80070490, "element not found");
  return 0;
}

EXPORT HR __stdcall HcsCloseProcess(void *process) {
  logCall("HcsCloseProcess");
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(process, 2);
  if (hd) {
    hd->closed = 1;
    hd->used = 0;
  }
  LeaveCriticalSection(&lock);
  return hd ? 0 : (HR)0x80070006;
}

EXPORT HR __stdcall HcsTerminateProcess(void *process, wchar_t **result) {
  if (result) *result = NULL;
  logCall("HcsTerminateProcess");
  FAIL_IF_INJECTED("HcsTerminateProcess");
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(process, 2);
  int p = hd ? hd->index : -1;
  LeaveCriticalSection(&lock);
  if (p < 0) return (HR)0x80070006;
  if (procs[p].exited) return HR_PROCESS_STOPPED;
  TerminateProcess(procs[p].process, 1);
  return 0;
}

/* Signals: recorded; CtrlShutdown/CtrlC/CtrlClose end the process as a console app would end. */
EXPORT HR __stdcall HcsSignalProcess(void *process, const wchar_t *options, wchar_t **result) {
  if (result) *result = NULL;
  char o[256];
  utf8(options, o, sizeof o);
  logCall("HcsSignalProcess %s", o);
  FAIL_IF_INJECTED("HcsSignalProcess");
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(process, 2);
  int p = hd ? hd->index : -1;
  LeaveCriticalSection(&lock);
  if (p < 0) return (HR)0x80070006;
  if (procs[p].exited) return HR_PROCESS_STOPPED;
  if (!strstr(o, "\"Signal\"")) return HR_INVALID_ARG;
  if (!strstr(o, "CtrlBreak") && !strstr(o, "CtrlLogOff")) TerminateProcess(procs[p].process, 0xC000013A);
  return 0;
}

EXPORT HR __stdcall HcsGetProcessInfo(void *process, HCS_PROCESS_INFORMATION *info, wchar_t **result) {
  (void)process;
  if (result) *result = NULL;
  memset(info, 0, sizeof *info);
  return (HR)0x80004001; /* E_NOTIMPL: the shim never re-obtains handles */
}

EXPORT HR __stdcall HcsGetProcessProperties(void *process, wchar_t **processProperties, wchar_t **result) {
  *processProperties = NULL;
  if (result) *result = NULL;
  logCall("HcsGetProcessProperties");
  FAIL_IF_INJECTED("HcsGetProcessProperties");
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(process, 2);
  int p = hd ? hd->index : -1;
  char doc[256];
  if (p >= 0)
    snprintf(doc, sizeof doc, "{\"ProcessId\":%lu,\"Exited\":%s,\"ExitCode\":%lu,\"LastWaitResult\":0}", (unsigned long)procs[p].pid, procs[p].exited ? "true" : "false",
             (unsigned long)procs[p].exitCode);
  LeaveCriticalSection(&lock);
  if (p < 0) return (HR)0x80070006;
  *processProperties = dupWide(doc);
  return 0;
}

EXPORT HR __stdcall HcsModifyProcess(void *process, const wchar_t *settings, wchar_t **result) {
  if (result) *result = NULL;
  char s[512];
  utf8(settings, s, sizeof s);
  logCall("HcsModifyProcess %s", s);
  FAIL_IF_INJECTED("HcsModifyProcess");
  EnterCriticalSection(&lock);
  Handle *hd = handleOf(process, 2);
  int p = hd ? hd->index : -1;
  LeaveCriticalSection(&lock);
  if (p < 0) return (HR)0x80070006;
  if (procs[p].exited) return HR_PROCESS_STOPPED;
  if (!strstr(s, "\"Operation\"")) return HR_INVALID_ARG;
  return 0;
}

EXPORT HR __stdcall HcsRegisterProcessCallback(void *process, NOTIFY callback, void *context, void **callbackHandle) {
  logCall("HcsRegisterProcessCallback");
  FAIL_IF_INJECTED("HcsRegisterProcessCallback");
  return registerCallback(process, 2, callback, context, callbackHandle);
}

EXPORT HR __stdcall HcsUnregisterProcessCallback(void *callbackHandle) {
  logCall("HcsUnregisterProcessCallback");
  return unregisterCallback(callbackHandle, 2);
}

EXPORT HR __stdcall HcsGetServiceProperties(const wchar_t *propertyQuery, wchar_t **properties, wchar_t **result) {
  (void)propertyQuery;
  if (result) *result = NULL;
  *properties = dupWide("{\"SupportedSchemaVersions\":[{\"Major\":2,\"Minor\":1}]}");
  return 0;
}

/* ---------- layers ---------- */

typedef struct {
  int32_t Flavour;
  const wchar_t *HomeDir;
} DriverInfo;

typedef struct {
  GUID LayerId;
  uint32_t Flags;
  const wchar_t *Path;
} WC_LAYER_DESCRIPTOR;

static Layer *layerOf(const wchar_t *path, int create) {
  for (int i = 0; i < MAX_LAYERS; i++)
    if (layers[i].used && _wcsicmp(layers[i].path, path) == 0) return &layers[i];
  if (!create) return NULL;
  for (int i = 0; i < MAX_LAYERS; i++)
    if (!layers[i].used) {
      memset(&layers[i], 0, sizeof layers[i]);
      layers[i].used = 1;
      wcsncpy(layers[i].path, path, 519);
      return &layers[i];
    }
  return NULL;
}

/*
 * Layer states outlive the process, as the real filter driver's do: a `delete` run after a killed
 * daemon must find the scratch still prepared. Kept in <dir>/layers.state, "state<TAB>path" lines.
 */
static void loadLayers(void) {
  char path[MAX_PATH + 32];
  if (!controlPath(path, sizeof path, "layers.state")) return;
  memset(layers, 0, sizeof layers);
  FILE *f = fopen(path, "rb");
  if (!f) return;
  char line[1200];
  int i = 0;
  while (i < MAX_LAYERS && fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    char *tab = strchr(line, '\t');
    if (!tab) continue;
    *tab = 0;
    layers[i].used = 1;
    layers[i].state = atoi(line);
    MultiByteToWideChar(CP_UTF8, 0, tab + 1, -1, layers[i].path, 519);
    i++;
  }
  fclose(f);
}

static void saveLayers(void) {
  char path[MAX_PATH + 32];
  if (!controlPath(path, sizeof path, "layers.state")) return;
  FILE *f = fopen(path, "wb");
  if (!f) return;
  for (int i = 0; i < MAX_LAYERS; i++) {
    if (!layers[i].used) continue;
    char p8[1100];
    utf8(layers[i].path, p8, sizeof p8);
    fprintf(f, "%d\t%s\n", layers[i].state, p8);
  }
  fclose(f);
}

/* Moves a layer from state `from` to `to`; a wrong order is ERROR_INVALID_STATE. */
static HR layerStep(const char *op, const DriverInfo *info, const wchar_t *id, int from, int to) {
  char p[600];
  utf8(id, p, sizeof p);
  if (!info || info->Flavour != 1) {
    logCall("%s %s refused: DriverInfo.Flavour must be 1", op, p);
    return HR_INVALID_ARG;
  }
  HR inj = injected(op);
  if (inj) {
    logCall("%s %s", op, p);
    return inj;
  }
  EnterCriticalSection(&lock);
  loadLayers();
  Layer *l = layerOf(id, from == 0);
  int state = l ? l->state : 0;
  if (!l || state != from) {
    LeaveCriticalSection(&lock);
    logCall("%s %s refused: layer is in state %d", op, p, state);
    return HR_WIN32_INVALID_STATE;
  }
  l->state = to;
  if (to == 0) l->used = 0;
  saveLayers();
  LeaveCriticalSection(&lock);
  logCall("%s %s", op, p);
  return 0;
}

EXPORT HR __stdcall ActivateLayer(const DriverInfo *info, const wchar_t *id) { return layerStep("ActivateLayer", info, id, 0, 1); }

EXPORT HR __stdcall PrepareLayer(const DriverInfo *info, const wchar_t *id, const WC_LAYER_DESCRIPTOR *descriptors, uintptr_t count) {
  char line[4096];
  line[0] = 0;
  for (uintptr_t i = 0; i < count; i++) {
    char path[600];
    utf8(descriptors[i].Path, path, sizeof path);
    const GUID *g = &descriptors[i].LayerId;
    appendf(line, sizeof line, " %08lx-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x=%s", (unsigned long)g->Data1, g->Data2, g->Data3, g->Data4[0], g->Data4[1], g->Data4[2],
            g->Data4[3], g->Data4[4], g->Data4[5], g->Data4[6], g->Data4[7], path);
  }
  logCall("PrepareLayer parents%s", line);
  return layerStep("PrepareLayer", info, id, 1, 2);
}

EXPORT HR __stdcall UnprepareLayer(const DriverInfo *info, const wchar_t *id) { return layerStep("UnprepareLayer", info, id, 2, 1); }

EXPORT HR __stdcall DeactivateLayer(const DriverInfo *info, const wchar_t *id) { return layerStep("DeactivateLayer", info, id, 1, 0); }

/* A volume path only for a prepared layer; two-call length protocol in UTF-16 units. */
EXPORT HR __stdcall GetLayerMountPath(const DriverInfo *info, const wchar_t *id, uintptr_t *length, wchar_t *buffer) {
  (void)info;
  FAIL_IF_INJECTED("GetLayerMountPath");
  EnterCriticalSection(&lock);
  loadLayers();
  Layer *l = layerOf(id, 0);
  int prepared = l && l->state == 2;
  int index = l ? (int)(l - layers) : 0;
  LeaveCriticalSection(&lock);
  if (!prepared) {
    logCall("GetLayerMountPath refused: layer not prepared");
    return HR_WIN32_INVALID_STATE;
  }
  wchar_t path[64];
  swprintf(path, 64, L"\\\\?\\Volume{%08x-0000-4000-8000-00000000f00d}\\", 0xabc00000 + index);
  size_t need = wcslen(path) + 1;
  if (!buffer) {
    *length = need;
    return 0;
  }
  if (*length < need) return (HR)0x8007007A; /* insufficient buffer */
  wcscpy(buffer, path);
  logCall("GetLayerMountPath");
  return 0;
}

/* Deterministic per name (the real one hashes it too); distinct names give distinct ids. */
EXPORT HR __stdcall NameToGuid(const wchar_t *name, GUID *guid) {
  FAIL_IF_INJECTED("NameToGuid");
  uint32_t h = 2166136261u;
  for (const wchar_t *c = name; *c; c++) h = (h ^ (uint32_t)*c) * 16777619u;
  guid->Data1 = h;
  guid->Data2 = (uint16_t)(h >> 16);
  guid->Data3 = 0x5000 | (uint16_t)(h & 0x0fff);
  for (int i = 0; i < 8; i++) guid->Data4[i] = (uint8_t)(h >> (i * 3));
  return 0;
}

EXPORT HR __stdcall LayerExists(const DriverInfo *info, const wchar_t *id, uint32_t *exists) {
  (void)info;
  EnterCriticalSection(&lock);
  loadLayers();
  *exists = layerOf(id, 0) != NULL;
  LeaveCriticalSection(&lock);
  return 0;
}
