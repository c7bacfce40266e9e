// The pieces of flatnet's addon (flatnet-netlink.node) that live in files of their own; netlink.c's Init
// puts them on the module's exports.
#ifndef FLATNET_ADDON_H
#define FLATNET_ADDON_H
#include <node_api.h>

// files.c: the plain file calls of the CNI plugin's hot path.
napi_status define_file_calls(napi_env env, napi_value exports);

#endif
