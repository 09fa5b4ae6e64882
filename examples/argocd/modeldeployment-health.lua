-- Argo CD health check for modeldeploy.io/ModelDeployment (Lua 5.1, as Argo CD runs it).
-- Healthy: Ready and no rollout running. Progressing: a rollout runs, or the operator has not
-- yet observed the latest generation. Suspended: the rollout is paused. Degraded: a rollback,
-- a failed rollout, or an invalid spec.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local phase = obj.status.phase
local degraded = condition("Degraded")
if (degraded ~= nil and degraded.status == "True") or phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Rollout phase " .. tostring(phase))
  return hs
end

if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = describe(condition("Progressing"), "Rollout paused")
  return hs
end

if phase == "Progressing" or phase == "Promoting" then
  hs.status = "Progressing"
  local weight = ""
  if obj.status.canary ~= nil and obj.status.canary.weight ~= nil then
    weight = " (canary at " .. obj.status.canary.weight .. "%)"
  end
  hs.message = describe(condition("Progressing") or condition("Ready"), "Rolling out") .. weight
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for serving pods")
return hs
