{
  "targets": [
    {
      "target_name": "weft_io",
      "sources": [
        "src/addon.cc",
        "src/args.cc",
        "src/batch.cc",
        "src/errors.cc",
        "src/fd.cc",
        "src/memory.cc",
        "src/netns.cc",
        "src/tun.cc",
        "src/udp.cc",
        "src/wait.cc"
      ],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      # A worker thread terminated inside a call cannot throw; without SWALLOW node-addon-api
      # aborts the whole process then (test/io/worker-terminate.test.ts).
      "defines": ["NAPI_VERSION=8", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror"]
    }
  ]
}
