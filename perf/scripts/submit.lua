-- wrk script: POST /v1/tasks with a new task_id and session_id on every request
-- (used by perf/scripts/admission.sh). Each wrk thread numbers its own tasks.
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local n = 0
request = function()
  n = n + 1
  local task = string.format("%08x-0000-4000-8000-%012x", tid, n)
  local session = string.format("%08x-0001-4000-8000-%012x", tid, n)
  local body = '{"task_id":"' .. task .. '","session_id":"' .. session ..
    '","workload":"completion","model_ref":"m","engine":"llamacpp","ctx":8192,' ..
    '"priority":"interactive","max_tokens":16,"deadline_ms":600000,"prompt":"admission"}'
  return wrk.format("POST", "/v1/tasks", {["Content-Type"] = "application/json"}, body)
end
