{{/*
Names. Kubernetes names are limited to 63 characters.
*/}}
{{- define "pii-vault.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pii-vault.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pii-vault.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "pii-vault.labels" -}}
helm.sh/chart: {{ include "pii-vault.chart" . }}
{{ include "pii-vault.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: the release's resources. Never change them: a StatefulSet's
selector is immutable.
*/}}
{{- define "pii-vault.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pii-vault.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the vault server pods.
*/}}
{{- define "pii-vault.serverSelectorLabels" -}}
{{ include "pii-vault.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "pii-vault.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pii-vault.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pii-vault.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "pii-vault.rootKeySecretName" -}}
{{- .Values.rootKey.existingSecret }}
{{- end }}

{{- define "pii-vault.rootKeySecretKey" -}}
{{- .Values.rootKey.existingSecretKey }}
{{- end }}

{{/*
Paths on the keyring volume (sled): the keyring file and, beside it, the
erasure journal, which a restore of the store volume does not roll back.
*/}}
{{- define "pii-vault.keyringFile" -}}
/var/lib/pii-vault/keyring/keyring
{{- end }}

{{- define "pii-vault.erasureJournal" -}}
/var/lib/pii-vault/keyring/keyring.erasures
{{- end }}

{{/*
The `policy` value parsed as TOML, as JSON ({"Error": "..."} when it does not parse).
*/}}
{{- define "pii-vault.parsedPolicy" -}}
{{- fromToml .Values.policy | toJson }}
{{- end }}

{{- define "pii-vault.policyConfigMapName" -}}
{{- default (printf "%s-policy" (include "pii-vault.fullname" .)) .Values.existingPolicyConfigMap }}
{{- end }}

{{- define "pii-vault.policyConfigMapKey" -}}
{{- if .Values.existingPolicyConfigMap }}
{{- .Values.existingPolicyConfigMapKey }}
{{- else -}}
policy.toml
{{- end }}
{{- end }}

{{- define "pii-vault.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "pii-vault.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{/*
The name the probes and `helm test` verify in the server's certificate.
*/}}
{{- define "pii-vault.tlsServerName" -}}
{{- default (printf "%s.%s.svc" (include "pii-vault.fullname" .) .Release.Namespace) .Values.tls.serverName }}
{{- end }}

{{/*
Paths in the container. The flags of `pii-vault serve` use them.
*/}}
{{- define "pii-vault.clientCaPath" -}}
{{- if .Values.tls.clientAuth.caSecretName -}}
/etc/pii-vault/client-ca/ca.crt
{{- else -}}
/etc/pii-vault/tls/ca.crt
{{- end }}
{{- end }}

{{/*
Arguments of `pii-vault health` after --addr: the CA, the server name, and the
client certificate under mutual TLS. Empty without TLS.
*/}}
{{- define "pii-vault.healthTlsArgs" -}}
{{- if .Values.tls.enabled }}
- --ca
- /etc/pii-vault/tls/ca.crt
- --tls-server-name
- {{ include "pii-vault.tlsServerName" . | quote }}
{{- if .Values.tls.clientAuth.enabled }}
- --cert
- /etc/pii-vault/tls/tls.crt
- --key
- /etc/pii-vault/tls/tls.key
{{- end }}
{{- end }}
{{- end }}

{{/*
The port of the health listener (--health-listen): grpc.health.v1 only, with
a connection budget of its own, so that probes are answered while clients
hold every connection of the gRPC port. No Service and no NetworkPolicy rule
expose it: only the kubelet (and exec probes, from inside the pod) reach it.
*/}}
{{- define "pii-vault.healthPort" -}}
8081
{{- end }}

{{/*
A probe against the health service on the health listener: native gRPC
without TLS, otherwise `pii-vault health` run in the container (kubelet's
gRPC probe has no TLS; the health listener has the gRPC port's TLS settings).
Called with (dict "root" $ "probe" .Values.probes.xxx).
*/}}
{{- define "pii-vault.probe" -}}
{{- $root := .root }}
{{- $port := include "pii-vault.healthPort" $root | int }}
{{- if $root.Values.tls.enabled }}
exec:
  command:
    - /usr/local/bin/pii-vault
    - health
    - --addr
    - https://127.0.0.1:{{ $port }}
    {{- with .service }}
    - --service
    - {{ . }}
    {{- end }}
    {{- with include "pii-vault.healthTlsArgs" $root | trim }}
    {{- . | nindent 4 }}
    {{- end }}
{{- else }}
grpc:
  port: {{ $port }}
  {{- with .service }}
  service: {{ . }}
  {{- end }}
{{- end }}
{{- with .probe }}
initialDelaySeconds: {{ .initialDelaySeconds }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- if hasKey . "successThreshold" }}
successThreshold: {{ .successThreshold }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks of combinations the schema cannot express. Each failure says what to
change.
*/}}
{{- define "pii-vault.validate" -}}
{{- /* The root key is never rendered: Helm would keep it in every revision of
       the release (sh.helm.release.v1.* Secrets), beyond any key retirement. */}}
{{- $rot := .Values.rootOfTrust }}
{{- if not (has $rot.kind (list "file" "transit" "pkcs11" "aws-kms")) }}
{{- fail (printf "rootOfTrust.kind %q is not supported: use \"file\" (rootKey.existingSecret), \"transit\", \"pkcs11\" or \"aws-kms\"" $rot.kind) }}
{{- end }}
{{- if and (eq $rot.kind "file") (not .Values.rootKey.existingSecret) }}
{{- fail (printf "rootKey.existingSecret is required: the chart never renders a root key (Helm would keep it in every sh.helm.release.v1.* release Secret, where no key retirement reaches it). Create the Secret once, keep an offline copy of the key, then set rootKey.existingSecret: pii-vault keygen --out root.key && kubectl -n %s create secret generic pii-vault-root-key --from-file=%s=root.key && helm upgrade --install ... --set rootKey.existingSecret=pii-vault-root-key. A release installed by an earlier chart that generated the key: set rootKey.existingSecret=%s-root-key. (Or seal the keyring outside the pod: rootOfTrust.kind transit, pkcs11 or aws-kms.)" .Release.Namespace .Values.rootKey.existingSecretKey (include "pii-vault.fullname" .)) }}
{{- end }}
{{- /* The root key being replaced (--previous-root-key-file): with kind
       file, a Secret of its own, never the new key's. */}}
{{- if and (eq $rot.kind "file") .Values.rootKey.previousSecret (eq .Values.rootKey.previousSecret .Values.rootKey.existingSecret) }}
{{- fail (printf "rootKey.previousSecret is rootKey.existingSecret (%q): the same Secret cannot be both the old root key (previousSecret, which seals the keyring now) and the new one (existingSecret). Create the new key in a Secret of its own, e.g. pii-vault keygen --out root-2.key && kubectl -n %s create secret generic pii-vault-root-key-2 --from-file=root.key=root-2.key, then set rootKey.existingSecret=pii-vault-root-key-2 and rootKey.previousSecret=%s" .Values.rootKey.existingSecret .Release.Namespace .Values.rootKey.existingSecret) }}
{{- end }}
{{- /* Each other root of trust: what the vault cannot start without. */}}
{{- if eq $rot.kind "transit" }}
{{- $t := $rot.transit }}
{{- if not (and $t.addr $t.key $t.tokenSecret.name) }}
{{- fail (printf "rootOfTrust.kind \"transit\" needs rootOfTrust.transit.addr (the OpenBao / Vault address, e.g. https://openbao.openbao.svc:8200), rootOfTrust.transit.key (the Transit key's name) and rootOfTrust.transit.tokenSecret.name (a Secret holding the token under the key %q, e.g. kubectl -n %s create secret generic pii-vault-transit-token --from-file=%s=token); missing: %s" $t.tokenSecret.key .Release.Namespace $t.tokenSecret.key (include "pii-vault.missing" (dict "rootOfTrust.transit.addr" $t.addr "rootOfTrust.transit.key" $t.key "rootOfTrust.transit.tokenSecret.name" $t.tokenSecret.name))) }}
{{- end }}
{{- if and (hasPrefix "http://" $t.addr) (not $t.allowPlaintext) }}
{{- fail (printf "rootOfTrust.transit.addr %q is plain http: the Transit token and the master key versions being sealed or unsealed would cross the network in clear. Use https:// (with rootOfTrust.transit.ca for your own CA), or set rootOfTrust.transit.allowPlaintext=true where the network itself encrypts (a service mesh with mutual TLS)" $t.addr) }}
{{- end }}
{{- if and $t.ca.existingSecret $t.ca.existingConfigMap }}
{{- fail "rootOfTrust.transit.ca: set existingSecret or existingConfigMap, not both: the vault reads one CA bundle" }}
{{- end }}
{{- else if eq $rot.kind "pkcs11" }}
{{- $p := $rot.pkcs11 }}
{{- if not (and $p.module $p.tokenLabel $p.pinSecret.name) }}
{{- fail (printf "rootOfTrust.kind \"pkcs11\" needs rootOfTrust.pkcs11.module (the path of the HSM's PKCS#11 module in the container, on rootOfTrust.pkcs11.volume), rootOfTrust.pkcs11.tokenLabel and rootOfTrust.pkcs11.pinSecret.name (a Secret holding the user PIN under the key %q, e.g. kubectl -n %s create secret generic pii-vault-hsm-pin --from-file=%s=pin); missing: %s" $p.pinSecret.key .Release.Namespace $p.pinSecret.key (include "pii-vault.missing" (dict "rootOfTrust.pkcs11.module" $p.module "rootOfTrust.pkcs11.tokenLabel" $p.tokenLabel "rootOfTrust.pkcs11.pinSecret.name" $p.pinSecret.name))) }}
{{- end }}
{{- else if eq $rot.kind "aws-kms" }}
{{- if not $rot.awsKms.region }}
{{- fail "rootOfTrust.kind \"aws-kms\" needs rootOfTrust.awsKms.region: the AWS region of the KMS keys (AWS_REGION), e.g. eu-west-1" }}
{{- end }}
{{- end }}
{{- if and (eq $rot.kind "aws-kms") $rot.awsKms.roleArn (not .Values.serviceAccount.create) }}
{{- fail "rootOfTrust.awsKms.roleArn is set as an annotation on the chart's ServiceAccount, but serviceAccount.create is false: annotate your own ServiceAccount (serviceAccount.name) with eks.amazonaws.com/role-arn and leave roleArn empty, or set serviceAccount.create" }}
{{- end }}
{{- /* Plaintext gRPC carries personal data and API keys in clear: it must be
       chosen, never fallen into. */}}
{{- if not (or .Values.tls.enabled .Values.tls.allowPlaintext) }}
{{- fail "TLS is not configured: gRPC would carry personal data and API keys in plaintext. Choose one: (1) serve TLS: set tls.enabled=true with tls.certManager.enabled=true and tls.certManager.issuerRef.name=<your cert-manager Issuer or ClusterIssuer>, or with tls.secretName=<a Secret holding tls.crt, tls.key and ca.crt>; or (2) accept plaintext explicitly: set tls.allowPlaintext=true (to try the chart, or where the network itself encrypts, e.g. a service mesh with mutual TLS)" }}
{{- end }}
{{- if and (eq .Values.storage.backend "sled") .Values.persistence.existingClaim (eq .Values.persistence.existingClaim .Values.keyring.persistence.existingClaim) }}
{{- fail (printf "keyring.persistence.existingClaim is the store's claim (%q): the keyring and the erasure journal need a volume of their own, snapshotted apart from the store (with a short retention, or none)" .Values.persistence.existingClaim) }}
{{- end }}
{{- if not (has .Values.storage.backend (list "sled" "postgres")) }}
{{- fail (printf "storage.backend %q is not supported: use \"sled\" (one pod, a volume) or \"postgres\" (any number of pods on one database)" .Values.storage.backend) }}
{{- end }}
{{- if and (eq .Values.storage.backend "sled") (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount is %d, but storage.backend \"sled\" is an embedded single-process store that only one pod may open: set replicaCount to 1 (or 0 to stop the vault), or use storage.backend \"postgres\" for more replicas" (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (ne .Values.storage.backend "postgres") }}
{{- fail (printf "autoscaling.enabled needs storage.backend \"postgres\": storage.backend %q runs exactly one pod" .Values.storage.backend) }}
{{- end }}
{{- if eq .Values.storage.backend "postgres" }}
{{- if not .Values.database.existingSecret }}
{{- fail (printf "storage.backend \"postgres\" needs database.existingSecret: the name of a Secret holding the PostgreSQL connection URL under the key database.existingSecretKey (%q), e.g. kubectl -n %s create secret generic pii-vault-database --from-literal=%s='postgres://vault:PASSWORD@db.example:5432/vault'. The chart never puts the URL in a ConfigMap or in the pod's arguments" .Values.database.existingSecretKey .Release.Namespace .Values.database.existingSecretKey) }}
{{- end }}
{{- end }}
{{- $ca := .Values.database.ca }}
{{- if and $ca.existingSecret $ca.existingConfigMap }}
{{- fail "database.ca: set existingSecret or existingConfigMap, not both: the vault reads one CA bundle" }}
{{- end }}
{{- if and (or $ca.existingSecret $ca.existingConfigMap) (ne .Values.storage.backend "postgres") }}
{{- fail (printf "database.ca verifies PostgreSQL's certificate, but storage.backend is %q: remove it or use storage.backend \"postgres\"" .Values.storage.backend) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- $as := .Values.autoscaling }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int $as.minReplicas) (int $as.maxReplicas)) }}
{{- end }}
{{- $cpu := gt (int $as.targetCPUUtilizationPercentage) 0 }}
{{- $memory := gt (int $as.targetMemoryUtilizationPercentage) 0 }}
{{- if not (or $cpu $memory) }}
{{- fail "autoscaling.enabled needs a target: set autoscaling.targetCPUUtilizationPercentage or autoscaling.targetMemoryUtilizationPercentage above 0" }}
{{- end }}
{{- /* Utilization is relative to the request: without one the HPA cannot act. */}}
{{- $requests := default dict (default dict .Values.resources).requests }}
{{- if and $cpu (not $requests.cpu) }}
{{- fail "autoscaling.targetCPUUtilizationPercentage needs resources.requests.cpu: utilization is a percentage of the request" }}
{{- end }}
{{- if and $memory (not $requests.memory) }}
{{- fail "autoscaling.targetMemoryUtilizationPercentage needs resources.requests.memory: utilization is a percentage of the request" }}
{{- end }}
{{- end }}
{{- if not .Values.existingPolicyConfigMap }}
{{- if not (trim .Values.policy) }}
{{- fail "policy is empty: set policy to the TOML policy text, or existingPolicyConfigMap to a ConfigMap holding it" }}
{{- end }}
{{- /* The vault checks the policy fully at start; catching syntax errors here
       keeps a broken policy from replacing the running pod. */}}
{{- $policy := include "pii-vault.parsedPolicy" . | fromJson }}
{{- if hasKey $policy "Error" }}
{{- fail (printf "policy is not valid TOML: %s" $policy.Error) }}
{{- end }}
{{- if not $policy.purposes }}
{{- fail "policy declares no purpose: add at least one [[purposes]] table" }}
{{- end }}
{{- end }}
{{- if and .Values.tls.clientAuth.enabled (not .Values.tls.enabled) }}
{{- fail "tls.clientAuth.enabled needs tls.enabled: client certificates are only checked over TLS" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.enabled) }}
{{- fail "tls.certManager.enabled needs tls.enabled: the certificate is only used over TLS" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name: the cert-manager Issuer or ClusterIssuer that signs the vault's certificate" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) (not .Values.tls.certManager.enabled) }}
{{- fail "tls.enabled needs a certificate: set tls.secretName to a Secret with tls.crt, tls.key and ca.crt, or tls.certManager.enabled with tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled: there is no metrics port to scrape" }}
{{- end }}
{{- if .Values.podDisruptionBudget.enabled }}
{{- $min := toString .Values.podDisruptionBudget.minAvailable }}
{{- $max := toString .Values.podDisruptionBudget.maxUnavailable }}
{{- if and (ne $min "") (ne $max "") }}
{{- fail "podDisruptionBudget: set only one of minAvailable and maxUnavailable (set the other to \"\")" }}
{{- end }}
{{- if and (eq $min "") (eq $max "") }}
{{- fail "podDisruptionBudget: set one of minAvailable and maxUnavailable" }}
{{- end }}
{{- $pods := include "pii-vault.minReplicas" . | int }}
{{- if and (gt $pods 1) (regexMatch "^[0-9]+$" $min) (ge (int $min) $pods) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%s) is not below the %d pods the vault runs at least: it would block every node drain. Use maxUnavailable: 1" $min $pods) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The fewest vault pods the release runs: autoscaling.minReplicas under the
HorizontalPodAutoscaler (postgres), replicaCount otherwise.
*/}}
{{- define "pii-vault.minReplicas" -}}
{{- if and (eq .Values.storage.backend "postgres") .Values.autoscaling.enabled }}
{{- int .Values.autoscaling.minReplicas }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/*
The names in a dict of "value name" => value whose value is empty, sorted
and comma-separated (for refusals that list what is missing).
*/}}
{{- define "pii-vault.missing" -}}
{{- $missing := list }}
{{- range $name, $value := . }}
{{- if not $value }}{{ $missing = append $missing $name }}{{ end }}
{{- end }}
{{- join ", " (sortAlpha $missing) }}
{{- end }}

{{/*
Whether a CA bundle for the Transit server's certificate is mounted
(--transit-ca), with rootOfTrust.kind transit.
*/}}
{{- define "pii-vault.transitCa" -}}
{{- $rot := .Values.rootOfTrust }}
{{- if and (eq $rot.kind "transit") (or $rot.transit.ca.existingSecret $rot.transit.ca.existingConfigMap) }}true{{ end }}
{{- end }}

{{/*
The TCP port the vault reaches its root of trust on: the port of
rootOfTrust.transit.addr (443 for https, 80 for http when it names none), or
443 for AWS KMS (and STS); empty for file and pkcs11.
*/}}
{{- define "pii-vault.rootOfTrustPort" -}}
{{- $rot := .Values.rootOfTrust }}
{{- if eq $rot.kind "transit" }}
{{- $url := urlParse $rot.transit.addr }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- if $port }}
{{- $port }}
{{- else if eq $url.scheme "http" -}}
80
{{- else -}}
443
{{- end }}
{{- else if eq $rot.kind "aws-kms" -}}
443
{{- end }}
{{- end }}

{{/*
Whether a CA bundle for PostgreSQL's certificate is mounted (--database-ca).
*/}}
{{- define "pii-vault.databaseCa" -}}
{{- if or .Values.database.ca.existingSecret .Values.database.ca.existingConfigMap }}true{{ end }}
{{- end }}

{{/*
A volume claim template of the sled StatefulSet. Called with (dict "root" $
"name" "data" "component" "store" "persistence" .Values.persistence). Its
labels never carry versions: claim templates cannot change later.
*/}}
{{- define "pii-vault.claimTemplate" -}}
{{- $p := .persistence -}}
- metadata:
    name: {{ .name }}
    labels:
      {{- include "pii-vault.selectorLabels" .root | nindent 6 }}
      {{- /* Backup tools select claims by label: store and keyring apart. */}}
      app.kubernetes.io/component: {{ .component }}
      {{- with $p.labels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with $p.annotations }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    accessModes:
      {{- toYaml $p.accessModes | nindent 6 }}
    {{- if $p.storageClass }}
    {{- if eq "-" $p.storageClass }}
    storageClassName: ""
    {{- else }}
    storageClassName: {{ $p.storageClass | quote }}
    {{- end }}
    {{- end }}
    resources:
      requests:
        storage: {{ $p.size | quote }}
{{- end }}
