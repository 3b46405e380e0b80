package controller

import (
	"encoding/json"
	"fmt"
	"os"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/vm-dhcp/vm-dhcp/api/v1alpha1"
	"github.com/vm-dhcp/vm-dhcp/controller/agentconfig"
)

// AgentValues are the deployment details stamped on every agent pod
// (--agent-values).
type AgentValues struct {
	Resources         *corev1.ResourceRequirements `json:"resources,omitempty"`
	Tolerations       []corev1.Toleration          `json:"tolerations,omitempty"`
	PriorityClassName string                       `json:"priorityClassName,omitempty"`
	ImagePullPolicy   corev1.PullPolicy            `json:"imagePullPolicy,omitempty"`
}

// LoadAgentValues reads an --agent-values file (JSON or YAML); unknown
// fields are an error so that a typo is not silently ignored.
func LoadAgentValues(path string) (AgentValues, error) {
	var v AgentValues
	if path == "" {
		return v, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return v, fmt.Errorf("read agent values: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		return v, fmt.Errorf("parse agent values %s: %w", path, err)
	}
	return v, nil
}

// AgentOptions say how agents are deployed.
type AgentOptions struct {
	Namespace      string
	Image          string
	ServiceAccount string
	Values         AgentValues
	// Owner, when set, owns every agent pod and agent ConfigMap (an object
	// of the chart in Namespace): helm uninstall deletes it and the garbage
	// collector the agents with it, even while IPPools are left.
	Owner *metav1.OwnerReference
}

// owners is the ownerReferences of an agent object.
func (o AgentOptions) owners() []metav1.OwnerReference {
	if o.Owner == nil {
		return nil
	}
	return []metav1.OwnerReference{*o.Owner}
}

// generatedConfig is the default CoreDHCP config of a pool's agent.
func generatedConfig(pool *v1alpha1.IPPool) (string, error) {
	return agentconfig.Render(agentconfig.Params{
		Interface:     AgentInterface,
		ServerIP:      string(pool.Spec.IPv4Config.ServerIP),
		PoolNamespace: pool.Namespace,
		PoolName:      pool.Name,
		SnapshotPath:  agentconfig.DefaultSnapshotPath,
		ServerDUID:    serverDUID(pool),
	})
}

// desiredPod is the agent pod of pool, for the given config content hash,
// on the pool's NAD.
func (o AgentOptions) desiredPod(pool *v1alpha1.IPPool, configHash string, nad *nadv1.NetworkAttachmentDefinition, image string) (*corev1.Pod, error) {
	nsName, nadName, err := splitNetwork(pool.Network())
	if err != nil {
		return nil, err
	}
	addrArgs, err := agentAddressArgs(pool)
	if err != nil {
		return nil, err
	}
	multus, err := json.Marshal([]map[string]string{{"namespace": nsName, "name": nadName, "interface": AgentInterface}})
	if err != nil {
		return nil, err
	}
	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	if o.Values.Resources != nil {
		resources = *o.Values.Resources
	}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstrPort(AgentHealthPort)}},
			PeriodSeconds:    10,
			FailureThreshold: 3,
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            AgentPodName(pool),
			Namespace:       o.Namespace,
			OwnerReferences: o.owners(),
			Labels:          agentLabels(pool),
			Annotations: map[string]string{AnnotationMultus: string(multus), AnnotationConfigHash: configHash,
				// The CNI config is read when the pod's network is set up, so
				// a change of the bridge or VLAN needs a new pod.
				AnnotationNetworkHash: agentconfig.Hash(nad.Spec.Config)},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: o.ServiceAccount,
			// The agent reads IPPools through the API; nothing else needs a token
			// but it does, so keep the default automount.
			RestartPolicy:     corev1.RestartPolicyAlways,
			PriorityClassName: o.Values.PriorityClassName,
			Tolerations:       o.Values.Tolerations,
			Containers: []corev1.Container{{
				Name:            AgentContainer,
				Image:           image,
				ImagePullPolicy: o.Values.ImagePullPolicy,
				Args: append([]string{
					"--conf", ConfigMountPath + "/" + ConfigKey,
					"--health-addr", fmt.Sprintf(":%d", AgentHealthPort),
				}, addrArgs...),
				Ports:          []corev1.ContainerPort{{Name: "health", ContainerPort: AgentHealthPort, Protocol: corev1.ProtocolTCP}},
				LivenessProbe:  probe("/healthz"),
				ReadinessProbe: probe("/readyz"),
				Resources:      resources,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					// NET_BIND_SERVICE for port 67, NET_RAW for SO_BINDTODEVICE
					// and raw replies, NET_ADMIN to set the server IP on eth1.
					Capabilities: &corev1.Capabilities{
						Drop: []corev1.Capability{"ALL"},
						Add:  []corev1.Capability{"NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"},
					},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "config", MountPath: ConfigMountPath, ReadOnly: true},
					{Name: "state", MountPath: SnapshotDir},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: AgentConfigMapName(pool)}}}},
				{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
	if clusterNetwork := nad.Labels[LabelClusterNetwork]; clusterNetwork != "" {
		pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: "network.harvesterhci.io/" + clusterNetwork, Operator: corev1.NodeSelectorOpIn, Values: []string{"true"},
				}},
			}}},
		}}
	}
	// The spec hash covers everything but the image (which has its own rule,
	// the hold annotation) and the config hash (which has its own annotation).
	specCopy := pod.Spec.DeepCopy()
	specCopy.Containers[0].Image = ""
	b, err := json.Marshal(struct {
		Spec   *corev1.PodSpec
		Multus string
	}{specCopy, string(multus)})
	if err != nil {
		return nil, err
	}
	pod.Annotations[AnnotationSpecHash] = agentconfig.Hash(string(b))
	return pod, nil
}
