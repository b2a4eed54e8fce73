// flowcraft-celery on Azure Container Apps: workers scaled by queue depth (KEDA's azure-queue
// scaler), one beat, Flower behind Microsoft Entra sign-in and the metrics exporter, all as one
// user-assigned managed identity (no keys anywhere). See README.md beside this file.
//
// The storage account, Cosmos DB account (with its database and containers), Azure Cache for
// Redis (Microsoft Entra authentication on) and container registry exist already; this template
// adds the identity, its role assignments, and the apps.

@description('Region of the new resources.')
param location string = resourceGroup().location

@description('The deployment image: the flowcraft-celery image plus your code (Dockerfile beside this file).')
param image string

@description('Name of an existing Azure Container Registry holding `image`.')
param registryName string

@description('Name of an existing storage account (general-purpose v2): the task queues.')
param storageAccountName string

@description('Name of an existing Azure Cosmos DB for NoSQL account: runs, contexts, results.')
param cosmosAccountName string

@description('Cosmos DB database (FLOWCRAFT_COSMOS_DATABASE), with its containers created beforehand.')
param cosmosDatabase string = 'flowcraft'

@description('Name of an existing Azure Cache for Redis with Microsoft Entra authentication enabled.')
param redisName string

@description('FLOWCRAFT_QUEUE_PREFIX: names this deployment (lowercase letters, digits, hyphens).')
param queuePrefix string = 'prd-'

@description('FLOWCRAFT_DEFAULT_QUEUE: the queue node tasks go to.')
param defaultQueue string = 'flowcraft'

@description('Visible messages per worker replica before KEDA adds one.')
param messagesPerReplica int = 50

@description('Most worker replicas.')
param maxWorkers int = 10

@description('Client id of the Microsoft Entra app registration people sign in to Flower with.')
param flowerClientId string

@secure()
@description('A client secret of that app registration.')
param flowerClientSecret string

// Built-in role definitions (the same ids in every tenant).
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var acrPull = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
var cosmosBuiltInDataContributor = '00000000-0000-0000-0000-000000000002'

// The Azure queue of the task queue: FLOWCRAFT_QUEUE_PREFIX + FLOWCRAFT_DEFAULT_QUEUE.
var taskQueue = '${queuePrefix}${defaultQueue}'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' existing = {
  name: cosmosAccountName
}

resource redis 'Microsoft.Cache/redis@2024-03-01' existing = {
  name: redisName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'flowcraft-${uniqueString(resourceGroup().id)}'
  location: location
}

// -- what the identity may do -------------------------------------------------------------------

resource queueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource blobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource pullRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, identity.id, acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPull)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// A Cosmos DB data-plane role: not an Azure RBAC role, assigned on the account itself.
resource cosmosRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos.id, identity.id, cosmosBuiltInDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosBuiltInDataContributor}'
    principalId: identity.properties.principalId
    scope: cosmos.id
  }
}

// Redis data access: an access policy assignment of the cache (Microsoft Entra authentication on).
resource redisAccess 'Microsoft.Cache/redis/accessPolicyAssignments@2024-03-01' = {
  parent: redis
  name: 'flowcraft'
  properties: {
    accessPolicyName: 'Data Contributor'
    objectId: identity.properties.principalId
    objectIdAlias: 'flowcraft'
  }
}

// -- the apps ----------------------------------------------------------------------------------

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'flowcraft-logs-${uniqueString(resourceGroup().id)}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appsEnvironment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: 'flowcraft'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

// Every process has the same settings; DefaultAzureCredential finds the identity by AZURE_CLIENT_ID.
var settings = [
  { name: 'CELERY_BROKER_URL', value: 'azurequeue://DefaultAzureCredential@${storage.properties.primaryEndpoints.queue}' }
  { name: 'AZURE_COSMOS_CONNECTION_STRING', value: 'AccountEndpoint=${cosmos.properties.documentEndpoint};' }
  { name: 'FLOWCRAFT_COSMOS_DATABASE', value: cosmosDatabase }
  { name: 'REDIS_URL', value: 'rediss://${redis.properties.hostName}:${redis.properties.sslPort}/0' }
  { name: 'FLOWCRAFT_REDIS_CREDENTIAL', value: 'DefaultAzureCredential' }
  { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
  { name: 'FLOWCRAFT_QUEUE_PREFIX', value: queuePrefix }
  { name: 'FLOWCRAFT_DEFAULT_QUEUE', value: defaultQueue }
]

var pullWithIdentity = [
  { server: registry.properties.loginServer, identity: identity.id }
]

// Workers: at least one (it also consumes the reconcile queue and answers remote control), one
// more per `messagesPerReplica` visible messages on the task queue, up to `maxWorkers`.
resource worker 'Microsoft.App/containerApps@2024-10-02-preview' = {
  name: 'flowcraft-worker'
  location: location
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  dependsOn: [ queueRole, blobRole, pullRole, cosmosRole, redisAccess ]
  properties: {
    managedEnvironmentId: appsEnvironment.id
    configuration: {
      activeRevisionsMode: 'Single'
      registries: pullWithIdentity
    }
    template: {
      // SIGTERM starts a warm shutdown: running node tasks finish, nothing new is taken.
      terminationGracePeriodSeconds: 300
      containers: [
        {
          name: 'worker'
          image: image
          args: [ 'worker', '-Q', '${defaultQueue},${defaultQueue}-reconcile', '-c', '4', '-n', 'worker@%h' ]
          env: settings
          resources: { cpu: json('1.0'), memory: '2Gi' }
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: maxWorkers
        rules: [
          {
            name: 'task-queue-depth'
            custom: {
              type: 'azure-queue'
              metadata: {
                accountName: storageAccountName
                queueName: taskQueue
                queueLength: string(messagesPerReplica)
              }
              identity: identity.id
            }
          }
        ]
      }
    }
  }
}

// Beat: exactly one replica, always (two at once are safe, only wasteful).
resource beat 'Microsoft.App/containerApps@2024-10-02-preview' = {
  name: 'flowcraft-beat'
  location: location
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  dependsOn: [ queueRole, pullRole, cosmosRole, redisAccess ]
  properties: {
    managedEnvironmentId: appsEnvironment.id
    configuration: {
      activeRevisionsMode: 'Single'
      registries: pullWithIdentity
    }
    template: {
      containers: [
        {
          name: 'beat'
          image: image
          args: [ 'beat' ]
          env: settings
          resources: { cpu: json('0.25'), memory: '0.5Gi' }
        }
      ]
      scale: { minReplicas: 1, maxReplicas: 1 }
    }
  }
}

// Flower: public HTTPS, but only people who sign in with Microsoft Entra ID reach it (the
// platform's authentication answers everyone else with the sign-in page). Its API is open to
// those who passed that gate only.
resource flower 'Microsoft.App/containerApps@2024-10-02-preview' = {
  name: 'flowcraft-flower'
  location: location
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  dependsOn: [ queueRole, pullRole, cosmosRole, redisAccess ]
  properties: {
    managedEnvironmentId: appsEnvironment.id
    configuration: {
      activeRevisionsMode: 'Single'
      registries: pullWithIdentity
      secrets: [ { name: 'flower-client-secret', value: flowerClientSecret } ]
      ingress: { external: true, targetPort: 5555, transport: 'http', allowInsecure: false }
    }
    template: {
      containers: [
        {
          name: 'flower'
          image: image
          args: [ 'flower' ]
          env: concat(settings, [ { name: 'FLOWER_UNAUTHENTICATED_API', value: 'true' } ])
          resources: { cpu: json('0.5'), memory: '1Gi' }
        }
      ]
      scale: { minReplicas: 1, maxReplicas: 1 }
    }
  }
}

resource flowerSignIn 'Microsoft.App/containerApps/authConfigs@2024-03-01' = {
  parent: flower
  name: 'current'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: flowerClientId
          clientSecretSettingName: 'flower-client-secret'
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: { allowedAudiences: [ 'api://${flowerClientId}' ] }
      }
    }
  }
}

// The Prometheus exporter: reachable inside the environment only, one per deployment.
resource metrics 'Microsoft.App/containerApps@2024-10-02-preview' = {
  name: 'flowcraft-metrics'
  location: location
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  dependsOn: [ queueRole, pullRole, cosmosRole, redisAccess ]
  properties: {
    managedEnvironmentId: appsEnvironment.id
    configuration: {
      activeRevisionsMode: 'Single'
      registries: pullWithIdentity
      ingress: { external: false, targetPort: 9808, transport: 'http' }
    }
    template: {
      containers: [
        {
          name: 'metrics'
          image: image
          args: [ 'metrics' ]
          env: settings
          resources: { cpu: json('0.25'), memory: '0.5Gi' }
        }
      ]
      scale: { minReplicas: 1, maxReplicas: 1 }
    }
  }
}

output flowerUrl string = 'https://${flower.properties.configuration.ingress.fqdn}'
output identityPrincipalId string = identity.properties.principalId
