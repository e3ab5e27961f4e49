//! The Lambda wiring every step's `main` uses: tracing, and a handler that receives raw JSON so
//! that a malformed event becomes our named `InvalidInput` rather than the runtime's own
//! deserialization error.

use std::future::Future;

use lambda_runtime::{service_fn, LambdaEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::StepError;

/// Runs `handler` under the Lambda Runtime API until the environment is shut down.
pub async fn run<F, Fut, O>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Result<O, StepError>>,
    O: Serialize,
{
    lambda_runtime::tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        handler(event.payload)
    }))
    .await
}

/// Deserializes a step's event into its typed input, or `InvalidInput` naming what is wrong.
pub fn parse<T: DeserializeOwned>(event: Value) -> Result<T, StepError> {
    serde_json::from_value(event).map_err(|e| StepError::invalid(format!("event: {e}")))
}
