// Command kubectl is upstream's cmd/kubectl at the same k8s.io/kubernetes
// version as the API server: Debian's kubernetes-client is 1.20, which has
// no `kubectl create token` and an old kustomize, and kubectl is supported
// only within one minor version of the API server.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // auth plugins, as upstream
)

func main() {
	// Verbosity is set before the command is built, as upstream does, so
	// klog honours -v while kubectl reads its plugins and .kuberc.
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) //nolint:errcheck
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
