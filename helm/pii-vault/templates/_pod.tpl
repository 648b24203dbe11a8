{{/*
The vault pod, shared by the StatefulSet (sled) and the Deployment
(postgres): the workload's spec.template, indented from column 0. Only the
storage differs:
  - sled: --data-dir on the volume `data` (subdirectory store), and
    --keyring-file and --erasure-journal on the volume `keyring`, a volume of
    its own so that no snapshot of the store holds the keyring (each a claim
    template, or persistence.existingClaim / keyring.persistence.existingClaim);
  - postgres: --store postgres, the URL from database.existingSecret in
    PII_VAULT_DATABASE_URL, no data volume at all (data and keyring live in
    the database); the CA that verifies the database, when given, read-only.
The root of trust (rootOfTrust.kind) adds its own arguments and volumes:
the root key Secret for `file` (and nothing else: no --root-of-trust flag,
so that releases from before the option keep their pod template); the
token (and CA) Secrets of `transit`; the PIN Secret, module volume, env and
init containers of `pkcs11`; the AWS SDK's environment for `aws-kms`. No
other kind mounts or names a root key, except during a migration:
rootKey.previousSecret (with any kind) mounts the root key that seals the
keyring now at previous-root-key and passes --previous-root-key-file, until
`pii-vault keys migrate-root-of-trust` seals it by the new root key or root
of trust. Unset, it renders nothing.
*/}}
{{- define "pii-vault.podTemplate" -}}
{{- $sled := eq .Values.storage.backend "sled" -}}
{{- $rot := .Values.rootOfTrust -}}
metadata:
  # No chart or app version label: a change to the pod template restarts the
  # vault (with sled, an outage), so only what the vault reads may change it.
  labels:
    {{- include "pii-vault.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/component: server
    app.kubernetes.io/managed-by: {{ .Release.Service }}
    {{- with .Values.commonLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  # No checksum of the policy here: the vault reloads its policy file when
  # the kubelet updates the mounted ConfigMap (docs/reload.md), so a new
  # policy restarts no pod (on sled, a restart is an outage).
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "pii-vault.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- /* postgres: replicas apart by node, unless affinity says otherwise. */}}
  {{- $affinity := deepCopy (default dict .Values.affinity) }}
  {{- if and (not $sled) (ne .Values.podAntiAffinity "none") (not (hasKey $affinity "podAntiAffinity")) }}
  {{- $term := dict "labelSelector" (dict "matchLabels" (include "pii-vault.serverSelectorLabels" . | fromYaml)) "topologyKey" "kubernetes.io/hostname" }}
  {{- if eq .Values.podAntiAffinity "hard" }}
  {{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
  {{- else }}
  {{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
  {{- end }}
  {{- end }}
  {{- with $affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if eq $rot.kind "pkcs11" }}
  {{- with $rot.pkcs11.initContainers }}
  # rootOfTrust.pkcs11.initContainers: e.g. copying the HSM vendor's module
  # into the `pkcs11` volume.
  initContainers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- end }}
  containers:
    - name: pii-vault
      image: {{ include "pii-vault.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - /usr/local/bin/pii-vault
      args:
        - serve
        - --listen
        - {{ printf "%s:50051" .Values.server.listenHost | quote }}
        {{- if $sled }}
        - --data-dir
        - /var/lib/pii-vault/store
        # The keyring and the erasure journal: on the keyring volume, apart
        # from the store, so that restoring the store rolls neither back.
        - --keyring-file
        - {{ include "pii-vault.keyringFile" . }}
        - --erasure-journal
        - {{ include "pii-vault.erasureJournal" . }}
        {{- else }}
        # Data and keyring live in PostgreSQL; the URL comes from a Secret,
        # in PII_VAULT_DATABASE_URL below.
        - --store
        - postgres
        - --database-pool
        - {{ int64 .Values.database.poolSize | quote }}
        {{- if .Values.database.allowPlaintext }}
        # Chosen on purpose (database.allowPlaintext): sslmode=disable or
        # prefer in the URL is accepted, and the connection may be in clear.
        - --database-allow-plaintext
        {{- end }}
        {{- if include "pii-vault.databaseCa" . }}
        - --database-ca
        - /etc/pii-vault/database-ca/ca.crt
        {{- end }}
        {{- end }}
        # How long backups of the store and keyring (or the database) are
        # kept: an erasure is CRYPTOGRAPHIC only this long after its master
        # key versions were destroyed.
        - --backup-retention
        - {{ .Values.backup.retention | quote }}
        # Audit events younger than this are never trimmed.
        - --audit-min-retention
        - {{ .Values.audit.minRetention | quote }}
        {{- if eq $rot.kind "file" }}
        - --root-key-file
        - /etc/pii-vault/root-key/root.key
        {{- else }}
        # The master key versions are sealed by the root of trust, outside
        # the pod: no root key file.
        - --root-of-trust
        - {{ $rot.kind }}
        {{- if eq $rot.kind "transit" }}
        - --transit-addr
        - {{ $rot.transit.addr | quote }}
        - --transit-mount
        - {{ $rot.transit.mount | quote }}
        - --transit-key
        - {{ $rot.transit.key | quote }}
        # Re-read at each call: a token rotated in the Secret is picked up.
        - --transit-token-file
        - /etc/pii-vault/transit-token/token
        {{- if include "pii-vault.transitCa" . }}
        - --transit-ca
        - /etc/pii-vault/transit-ca/ca.crt
        {{- end }}
        {{- else if eq $rot.kind "pkcs11" }}
        - --pkcs11-module
        - {{ $rot.pkcs11.module | quote }}
        - --pkcs11-token-label
        - {{ $rot.pkcs11.tokenLabel | quote }}
        - --pkcs11-pin-file
        - /etc/pii-vault/pkcs11-pin/pin
        {{- else if eq $rot.kind "aws-kms" }}
        - --aws-kms-pending-window-days
        - {{ int64 $rot.awsKms.pendingWindowDays | quote }}
        {{- end }}
        {{- end }}
        {{- if .Values.rootKey.previousSecret }}
        # During a migration only (rootKey.previousSecret): the root key that
        # seals the keyring now, until `pii-vault keys migrate-root-of-trust`
        # seals it by the new one. Then unset it and delete the old key.
        - --previous-root-key-file
        - /etc/pii-vault/previous-root-key/root.key
        {{- end }}
        - --policy
        - /etc/pii-vault/policy/policy.toml
        - --log-format
        - json
        - --dek-cache
        - {{ int64 .Values.server.dekCacheSize | quote }}
        # Kubernetes makes Secret files group-readable (0440, group
        # fsGroup) whatever defaultMode says once fsGroup is set.
        - --allow-group-readable-keys
        # The probes' own listener: grpc.health.v1 only, with the gRPC port's
        # TLS settings and a connection budget of its own, so that probes are
        # answered while idle clients hold every connection of the gRPC port.
        - --health-listen
        - {{ printf "%s:%s" .Values.server.listenHost (include "pii-vault.healthPort" .) | quote }}
        {{- if .Values.metrics.enabled }}
        - --metrics-listen
        - {{ printf "%s:9090" .Values.server.listenHost | quote }}
        {{- end }}
        {{- if .Values.tls.enabled }}
        - --tls-cert
        - /etc/pii-vault/tls/tls.crt
        - --tls-key
        - /etc/pii-vault/tls/tls.key
        {{- if .Values.tls.clientAuth.enabled }}
        - --tls-client-ca
        - {{ include "pii-vault.clientCaPath" . }}
        {{- end }}
        {{- end }}
        {{- range .Values.server.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: PII_VAULT_LOG
          value: {{ .Values.server.logLevel | quote }}
        {{- if not $sled }}
        # The URL holds the database password: from the Secret only, never
        # in the pod spec, a ConfigMap or the arguments.
        - name: PII_VAULT_DATABASE_URL
          valueFrom:
            secretKeyRef:
              name: {{ .Values.database.existingSecret }}
              key: {{ .Values.database.existingSecretKey }}
        {{- end }}
        {{- if eq $rot.kind "aws-kms" }}
        # The AWS SDK's standard environment; credentials from IRSA (the
        # ServiceAccount's eks.amazonaws.com/role-arn) or the default chain.
        - name: AWS_REGION
          value: {{ $rot.awsKms.region | quote }}
        {{- with $rot.awsKms.endpointUrl }}
        - name: AWS_ENDPOINT_URL
          value: {{ . | quote }}
        {{- end }}
        {{- else if eq $rot.kind "pkcs11" }}
        {{- with $rot.pkcs11.env }}
        # What the PKCS#11 module reads (rootOfTrust.pkcs11.env).
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- end }}
        {{- with .Values.server.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: grpc
          containerPort: 50051
          protocol: TCP
        - name: health
          containerPort: {{ include "pii-vault.healthPort" . }}
          protocol: TCP
        {{- if .Values.metrics.enabled }}
        - name: metrics
          containerPort: 9090
          protocol: TCP
        {{- end }}
      {{- if .Values.probes.startup.enabled }}
      # The process, not the vault: it answers SERVING as soon as it runs,
      # while the vault may still open (and upgrade) its store; readiness
      # waits for the vault.
      startupProbe:
        {{- include "pii-vault.probe" (dict "root" . "probe" .Values.probes.startup "service" "pii-vault.process") | trim | nindent 8 }}
      {{- end }}
      {{- if .Values.probes.liveness.enabled }}
      # Only that the process runs and accepts connections, never the health
      # status: NOT_SERVING (shutdown) or a slow answer under load must not
      # get the vault killed. On the health listener: clients holding every
      # connection of the gRPC port must not get it killed either.
      {{- with .Values.probes.liveness }}
      livenessProbe:
        tcpSocket:
          port: health
        initialDelaySeconds: {{ .initialDelaySeconds }}
        periodSeconds: {{ .periodSeconds }}
        timeoutSeconds: {{ .timeoutSeconds }}
        failureThreshold: {{ .failureThreshold }}
      {{- end }}
      {{- end }}
      {{- if .Values.probes.readiness.enabled }}
      readinessProbe:
        {{- include "pii-vault.probe" (dict "root" . "probe" .Values.probes.readiness) | trim | nindent 8 }}
      {{- end }}
      {{- if gt (int .Values.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ .Values.preStopSleepSeconds }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- if $sled }}
        # Two volumes: the store, and the keyring with the erasure journal.
        # They are snapshotted apart, the keyring with a short retention.
        - name: data
          mountPath: /var/lib/pii-vault/store
          subPath: store
        - name: keyring
          mountPath: /var/lib/pii-vault/keyring
        {{- end }}
        {{- if eq $rot.kind "file" }}
        - name: root-key
          mountPath: /etc/pii-vault/root-key
          readOnly: true
        {{- else if eq $rot.kind "transit" }}
        - name: transit-token
          mountPath: /etc/pii-vault/transit-token
          readOnly: true
        {{- if include "pii-vault.transitCa" . }}
        - name: transit-ca
          mountPath: /etc/pii-vault/transit-ca
          readOnly: true
        {{- end }}
        {{- else if eq $rot.kind "pkcs11" }}
        - name: pkcs11-pin
          mountPath: /etc/pii-vault/pkcs11-pin
          readOnly: true
        {{- if $rot.pkcs11.volume }}
        - name: pkcs11
          mountPath: {{ $rot.pkcs11.mountPath }}
          readOnly: {{ $rot.pkcs11.readOnly }}
        {{- end }}
        {{- end }}
        {{- if .Values.rootKey.previousSecret }}
        - name: previous-root-key
          mountPath: /etc/pii-vault/previous-root-key
          readOnly: true
        {{- end }}
        - name: policy
          mountPath: /etc/pii-vault/policy
          readOnly: true
        {{- if .Values.tls.enabled }}
        - name: tls
          mountPath: /etc/pii-vault/tls
          readOnly: true
        {{- if and .Values.tls.clientAuth.enabled .Values.tls.clientAuth.caSecretName }}
        - name: client-ca
          mountPath: /etc/pii-vault/client-ca
          readOnly: true
        {{- end }}
        {{- end }}
        {{- if include "pii-vault.databaseCa" . }}
        - name: database-ca
          mountPath: /etc/pii-vault/database-ca
          readOnly: true
        {{- end }}
  volumes:
    {{- if eq $rot.kind "file" }}
    - name: root-key
      secret:
        secretName: {{ include "pii-vault.rootKeySecretName" . }}
        defaultMode: 288  # = 0440; decimal, as YAML 1.2 tools read 0440 as 440
        items:
          - key: {{ include "pii-vault.rootKeySecretKey" . }}
            path: root.key
    {{- else if eq $rot.kind "transit" }}
    - name: transit-token
      secret:
        secretName: {{ $rot.transit.tokenSecret.name }}
        defaultMode: 288  # = 0440
        items:
          - key: {{ $rot.transit.tokenSecret.key }}
            path: token
    {{- with $rot.transit.ca }}
    {{- if .existingSecret }}
    - name: transit-ca
      secret:
        secretName: {{ .existingSecret }}
        defaultMode: 292  # = 0444: a CA bundle is public
        items:
          - key: {{ .key }}
            path: ca.crt
    {{- else if .existingConfigMap }}
    - name: transit-ca
      configMap:
        name: {{ .existingConfigMap }}
        defaultMode: 292  # = 0444
        items:
          - key: {{ .key }}
            path: ca.crt
    {{- end }}
    {{- end }}
    {{- else if eq $rot.kind "pkcs11" }}
    - name: pkcs11-pin
      secret:
        secretName: {{ $rot.pkcs11.pinSecret.name }}
        defaultMode: 288  # = 0440
        items:
          - key: {{ $rot.pkcs11.pinSecret.key }}
            path: pin
    {{- with $rot.pkcs11.volume }}
    # The PKCS#11 module and its configuration (rootOfTrust.pkcs11.volume).
    - name: pkcs11
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- end }}
    {{- if .Values.rootKey.previousSecret }}
    # The root key being replaced (rootKey.previousSecret), during a
    # migration only.
    - name: previous-root-key
      secret:
        secretName: {{ .Values.rootKey.previousSecret }}
        defaultMode: 288  # = 0440; decimal, as YAML 1.2 tools read 0440 as 440
        items:
          - key: {{ .Values.rootKey.previousSecretKey }}
            path: root.key
    {{- end }}
    - name: policy
      configMap:
        name: {{ include "pii-vault.policyConfigMapName" . }}
        defaultMode: 292  # = 0444
        items:
          - key: {{ include "pii-vault.policyConfigMapKey" . }}
            path: policy.toml
    {{- if .Values.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ include "pii-vault.tlsSecretName" . }}
        defaultMode: 288  # = 0440
    {{- if and .Values.tls.clientAuth.enabled .Values.tls.clientAuth.caSecretName }}
    - name: client-ca
      secret:
        secretName: {{ .Values.tls.clientAuth.caSecretName }}
        defaultMode: 292  # = 0444
        items:
          - key: ca.crt
            path: ca.crt
    {{- end }}
    {{- end }}
    {{- with .Values.database.ca }}
    {{- if .existingSecret }}
    - name: database-ca
      secret:
        secretName: {{ .existingSecret }}
        defaultMode: 292  # = 0444: a CA bundle is public
        items:
          - key: {{ .key }}
            path: ca.crt
    {{- else if .existingConfigMap }}
    - name: database-ca
      configMap:
        name: {{ .existingConfigMap }}
        defaultMode: 292  # = 0444
        items:
          - key: {{ .key }}
            path: ca.crt
    {{- end }}
    {{- end }}
    {{- if and $sled .Values.persistence.existingClaim }}
    - name: data
      persistentVolumeClaim:
        claimName: {{ .Values.persistence.existingClaim }}
    {{- end }}
    {{- if and $sled .Values.keyring.persistence.existingClaim }}
    - name: keyring
      persistentVolumeClaim:
        claimName: {{ .Values.keyring.persistence.existingClaim }}
    {{- end }}
{{- end }}
