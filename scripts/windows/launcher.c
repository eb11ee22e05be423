/*
 * containerd-shim-tshim-v2.exe: the executable containerd on Windows starts (it needs a real PE
 * file named containerd-shim-<name>-<version>.exe). It runs Node with the compiled shim,
 *   "%TSHIM_NODE%" (default: node.exe on PATH) "<exe dir>\..\dist\main.js" <our arguments>
 * with the same standard handles, waits, and exits with Node's exit code. containerd reads `start`'s
 * stdout to EOF; the daemon that `start` spawns does not inherit it (Node disables stdio
 * inheritance), so the EOF comes when `start` is done.
 *
 * UV_THREADPOOL_SIZE is raised (unless set): every blocked HCS stdio read pins a libuv worker.
 *
 * Build: x86_64-w64-mingw32-gcc -O2 -municode -o bin/containerd-shim-tshim-v2.exe scripts/windows/launcher.c
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <stdio.h>
#include <wchar.h>

/* The part of our command line after argv[0], exactly as containerd wrote it. */
static const wchar_t *arguments(void) {
  const wchar_t *p = GetCommandLineW();
  if (*p == L'"') {
    p++;
    while (*p && *p != L'"') p++;
    if (*p) p++;
  } else {
    while (*p && *p != L' ' && *p != L'\t') p++;
  }
  while (*p == L' ' || *p == L'\t') p++;
  return p;
}

int wmain(void) {
  wchar_t self[MAX_PATH];
  DWORD n = GetModuleFileNameW(NULL, self, MAX_PATH);
  if (n == 0 || n >= MAX_PATH) return 127;
  wchar_t *slash = wcsrchr(self, L'\\');
  if (slash) *slash = 0;

  wchar_t node[MAX_PATH];
  if (!GetEnvironmentVariableW(L"TSHIM_NODE", node, MAX_PATH)) wcscpy(node, L"node.exe");
  wchar_t pool[16];
  if (!GetEnvironmentVariableW(L"UV_THREADPOOL_SIZE", pool, 16)) SetEnvironmentVariableW(L"UV_THREADPOOL_SIZE", L"64");

  size_t size = wcslen(node) + wcslen(self) + wcslen(arguments()) + 64;
  wchar_t *command = (wchar_t *)calloc(size, sizeof(wchar_t));
  if (!command) return 127;
  swprintf(command, size, L"\"%ls\" \"%ls\\..\\dist\\main.js\" %ls", node, self, arguments());

  STARTUPINFOW si;
  ZeroMemory(&si, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
  si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
  PROCESS_INFORMATION pi;
  if (!CreateProcessW(NULL, command, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) {
    fwprintf(stderr, L"containerd-shim-tshim-v2: cannot run %ls (error %lu); set TSHIM_NODE to node.exe\n", node, GetLastError());
    return 127;
  }
  CloseHandle(pi.hThread);
  WaitForSingleObject(pi.hProcess, INFINITE);
  DWORD code = 1;
  GetExitCodeProcess(pi.hProcess, &code);
  return (int)code;
}
